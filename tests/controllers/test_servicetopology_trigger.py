"""The service topology trigger through a real `aggapi serve` on the session devcluster: changing a
Service's `openyurt.io/topologyKeys` annotation, or a NodePool's members, annotates the Service's
EndpointSlices and Endpoints with `openyurt.io/update-trigger` (watchers get MODIFIED), and a Service
without the annotation is never touched. Polls; never asserts on time."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from npkit import MERGE, POOL_LABEL, NPEnv, eventually, make_node, patch_node, pool_status
from support.aggapi import NP, nodepool

from aggapi.controllers.servicetopology import TOPOLOGY_KEYS, UPDATE_TRIGGER

NS = "default"
SVCS = f"/api/v1/namespaces/{NS}/services"
EPS = f"/api/v1/namespaces/{NS}/endpoints"
SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def make_service(env: NPEnv, name: str, node: str) -> None:
    """A Service with one EndpointSlice and its Endpoints (the devcluster has no endpoint controllers)."""
    env.dc.apply(
        SVCS,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"ports": [{"port": 80}]},
        },
    )
    env.dc.apply(
        SLICES,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": node}],
            "ports": [{"port": 80, "protocol": "TCP"}],
        },
    )
    env.dc.apply(
        EPS,
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": name},
            "subsets": [{"addresses": [{"ip": "10.0.0.1", "nodeName": node}], "ports": [{"port": 80}]}],
        },
    )


def annotate(env: NPEnv, name: str, value: str | None) -> None:
    patch = {"metadata": {"annotations": {TOPOLOGY_KEYS: value}}}
    code, out = env.dc.request("PATCH", f"{SVCS}/{name}", patch, headers=MERGE)
    assert code == 200, out


def trigger(env: NPEnv, path: str) -> str | None:
    code, obj = env.dc.get(path)
    assert code == 200, obj
    value = (obj["metadata"].get("annotations") or {}).get(UPDATE_TRIGGER)
    return None if value is None else str(value)


def slice_rv(env: NPEnv) -> str:
    code, out = env.dc.get(SLICES)
    assert code == 200, out
    return str(out["metadata"]["resourceVersion"])


def watch_events(env: NPEnv, rv: str, selector: str) -> Iterator[dict[str, Any]]:
    """A watch on EndpointSlices from `rv` (events since then are replayed), ended by the server."""
    q = urllib.parse.urlencode(
        {"watch": "true", "resourceVersion": rv, "labelSelector": selector, "timeoutSeconds": "10"}
    )
    req = urllib.request.Request(f"{env.dc.base}{SLICES}?{q}", headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=30, context=env.dc.ctx) as resp:
        for line in resp:
            if line.strip():
                yield json.loads(line)


@pytest.fixture(scope="module")
def leading(np_env: NPEnv) -> Iterator[NPEnv]:
    """np_env once its trigger follows changes (elected, informers synced): the trigger reacts to changes
    only, so a probe Service is annotated with fresh values until its slice is touched."""
    env, probe = np_env, uid("st-probe")
    make_service(env, probe, "nowhere")
    try:
        deadline = time.monotonic() + 60
        while trigger(env, f"{SLICES}/{probe}-1") is None:
            assert time.monotonic() < deadline, "the service topology trigger never touched the probe"
            annotate(env, probe, uid("openyurt.io/nodepool,x"))
            time.sleep(0.25)
        yield env
    finally:
        delete_service(env, probe)


def delete_service(env: NPEnv, name: str) -> None:
    env.dc.request("DELETE", f"{SVCS}/{name}")
    env.dc.request("DELETE", f"{EPS}/{name}")
    env.dc.request("DELETE", f"{SLICES}/{name}-1")


def untouched(env: NPEnv, name: str) -> bool:
    return trigger(env, f"{SLICES}/{name}-1") is None and trigger(env, f"{EPS}/{name}") is None


@pytest.fixture
def topo(leading: NPEnv) -> Iterator[tuple[NPEnv, str, str, str, str]]:
    """A pool, a node outside it, a topology-keyed-to-be Service and a plain Service."""
    env = leading
    pool, node, svc, plain = uid("st-pool"), uid("st-node"), uid("st-svc"), uid("st-plain")
    code, out = env.agg.request("POST", NP, nodepool(pool))
    assert code == 201, out
    make_node(env, node, "127.0.9.1", {})
    make_service(env, svc, node)
    make_service(env, plain, node)
    try:
        yield env, pool, node, svc, plain
    finally:
        env.dc.request("DELETE", f"/api/v1/nodes/{node}")
        for name in (svc, plain):
            delete_service(env, name)
        eventually(lambda: not pool_status(env, pool).get("nodes"), "the pool emptied")
        env.agg.request("DELETE", f"{NP}/{pool}")


def test_annotation_change_touches_slices_and_endpoints(topo: tuple[NPEnv, str, str, str, str]) -> None:
    env, _pool, _node, svc, plain = topo
    slice_path, eps_path = f"{SLICES}/{svc}-1", f"{EPS}/{svc}"
    assert trigger(env, slice_path) is None
    rv = slice_rv(env)

    annotate(env, svc, "openyurt.io/nodepool")
    first = eventually(lambda: trigger(env, slice_path), "the slice touched after annotating")
    eventually(lambda: trigger(env, eps_path), "the Endpoints touched after annotating")

    # What kube-proxy sees: a MODIFIED event of the slice carrying the trigger.
    seen = None
    for ev in watch_events(env, rv, f"kubernetes.io/service-name={svc}"):
        annotations = ev["object"]["metadata"].get("annotations") or {}
        if ev["type"] == "MODIFIED" and UPDATE_TRIGGER in annotations:
            seen = annotations[UPDATE_TRIGGER]
            break
    assert seen is not None

    annotate(env, svc, "kubernetes.io/hostname,openyurt.io/nodepool")
    second = eventually(
        lambda: (v := trigger(env, slice_path)) != first and v, "a new trigger after changing the annotation"
    )
    annotate(env, svc, None)
    eventually(
        lambda: (v := trigger(env, slice_path)) not in (first, second) and v,
        "a new trigger after removing the annotation",
    )
    assert untouched(env, plain)


def test_pool_membership_change_touches_topology_services(
    topo: tuple[NPEnv, str, str, str, str],
) -> None:
    env, pool, node, svc, plain = topo
    slice_path = f"{SLICES}/{svc}-1"
    annotate(env, svc, "openyurt.io/nodepool")
    before = eventually(lambda: trigger(env, slice_path), "the slice touched after annotating")

    patch_node(env, node, {"metadata": {"labels": {POOL_LABEL: pool}}})
    eventually(lambda: pool_status(env, pool).get("nodes") == [node], "the node joined the pool")
    eventually(
        lambda: (v := trigger(env, slice_path)) != before and v,
        "a new trigger after the pool's members changed",
    )
    assert trigger(env, f"{EPS}/{svc}") is not None
    assert untouched(env, plain)

    touched = trigger(env, slice_path)
    patch_node(env, node, {"metadata": {"labels": {POOL_LABEL: None}}})
    eventually(lambda: not pool_status(env, pool).get("nodes"), "the node left the pool")
    eventually(lambda: (v := trigger(env, slice_path)) != touched and v, "a new trigger after the node left")
    assert untouched(env, plain)
