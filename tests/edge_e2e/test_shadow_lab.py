"""The shadow-apiserver in the lab (issue 7, docs/shadow.md): each node's kubelet-sim heartbeats and
list+watches (as kubelet and kube-proxy) through its node's shadow, whose upstream is the node's cloud
link. Cutting the link keeps the node's view of the API (even across a kubelet and a shadow restart);
healing it pushes the node's status upstream and removes what was deleted meanwhile."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from support.aggapi import kubectl
from support.etcd import EtcdServer
from support.lab import start_lab

from aggapi.devcluster.labnodes import NAMESPACE
from aggapi.devcluster.labshadow import api_view_file, start_shadow
from aggapi.devlab import Lab

pytestmark = pytest.mark.slow
T = TypeVar("T")
NODE = "edge-0"
LAB: list[Lab] = []  # for failure messages


@pytest.fixture(scope="module")
def lab(etcd_server: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    the_lab = start_lab(tmp_path_factory.mktemp("shadow-lab"), etcd_server.client_url, nodes=2)
    LAB.append(the_lab)
    try:
        yield the_lab
    finally:
        the_lab.stop()


def eventually(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last is not None:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not within {timeout:.0f}s: {what} (last: {last!r}; view: {view(LAB[0])!r})"
            )
        time.sleep(0.3)


def view(lab: Lab, node: str = NODE) -> dict[str, Any]:
    assert lab.edge is not None
    path: Path = api_view_file(lab.edge, lab.edge.node(node))
    try:
        out: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return out


def ready(lab: Lab, node: str = NODE) -> str:
    res = kubectl(lab.kubeconfig, "get", "node", node, "-o", "json")
    assert res.returncode == 0, res.stderr
    conds = json.loads(res.stdout)["status"]["conditions"]
    return str(next(c for c in conds if c["type"] == "Ready")["status"])


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"ports": [{"port": 80}]},
    }


def sees(lab: Lab, *services: str, gone: tuple[str, ...] = ()) -> Callable[[], dict[str, Any] | None]:
    def probe() -> dict[str, Any] | None:
        v = view(lab)
        have = set(v.get("services") or [])
        want = {f"{NAMESPACE}/{s}" for s in services}
        lost = {f"{NAMESPACE}/{s}" for s in gone}
        return v if want <= have and not (lost & have) else None

    return probe


def test_the_kubelet_talks_to_the_cloud_through_its_shadow(lab: Lab) -> None:
    assert lab.edge is not None
    node = lab.edge.node(NODE)

    def synced() -> dict[str, Any] | None:
        v = view(lab)
        feeds = ("pods", "services", "endpointslices", "configmaps")
        return v if all((v.get("synced") or {}).get(k) for k in feeds) else None

    v = eventually("the kubelet-sim's view synced", synced)

    assert v["pods"] == [f"{NAMESPACE}/{node.pod}"]  # only the pods bound to this node
    assert ready(lab) == "True"  # heartbeats reach the devcluster through the shadow
    cache = lab.state / "nodes" / NODE / "shadow"
    pod_file = cache / "kubelet" / "pods" / NAMESPACE / f"{node.pod}.json"  # written in the background
    eventually("the pod in the shadow's disk cache", lambda: pod_file.is_file() or None, 10)
    eventually("kube-proxy's cache", lambda: (cache / "kube-proxy").is_dir() or None, 10)


def test_cut_node_keeps_its_view_and_catches_up_when_healed(lab: Lab) -> None:
    assert lab.edge is not None
    admin = lab.admin()
    keep, drop = f"keep-{uuid.uuid4().hex[:6]}", f"drop-{uuid.uuid4().hex[:6]}"
    for name in (keep, drop):
        admin.apply(f"/api/v1/namespaces/{NAMESPACE}/services", service(name))
    eventually("both services seen through the shadow", sees(lab, keep, drop))
    # The sample in-cluster client (a pod's ServiceAccount token, the shadow's HTTPS port).
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": keep, "namespace": NAMESPACE}}
    admin.apply(f"/api/v1/namespaces/{NAMESPACE}/configmaps", config)

    def app_sees() -> bool | None:
        return f"{NAMESPACE}/{keep}" in (view(lab).get("configmaps") or []) or None

    eventually("the sample app's ConfigMap", app_sees)
    lab.cut_link(NODE)
    try:
        eventually(
            "NotReady upstream: its heartbeats stay in the shadow", lambda: ready(lab) != "True" or None
        )
        # The kubelet restarts while the cloud is unreachable: it relists from the shadow's cache.
        lab.stop_kubelet(NODE)
        view_file = api_view_file(lab.edge, lab.edge.node(NODE))
        view_file.unlink()
        lab.start_kubelet(NODE)
        v = eventually("the restarted kubelet's view, from the cache", sees(lab, keep, drop))
        assert v["pods"] == [f"{NAMESPACE}/{lab.edge.node(NODE).pod}"]
        # The sample app restarted too: its own (token) reads are served from the cache as well.
        eventually("the sample app's ConfigMap offline", app_sees)
        # The shadow itself restarts offline too (a node reboot): it serves from disk.
        lab.stop_child(f"shadow-{NODE}")
        start_shadow(lab.edge, lab.edge.node(NODE), lab.cfg.shadow_probe_period)
        lab.stop_kubelet(NODE)
        view_file.unlink()
        lab.start_kubelet(NODE)
        eventually("the view after a shadow restart offline", sees(lab, keep, drop))
        # Deleted in the cloud while the node cannot hear about it.
        code, body = admin.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/services/{drop}")
        assert code == 200, body
        time.sleep(2)  # several shadow probe periods: the node must still not know
        assert f"{NAMESPACE}/{drop}" in view(lab)["services"]
    finally:
        lab.heal_link(NODE)
    eventually("Ready again: the node's status reaches the cloud", lambda: ready(lab) == "True" or None)
    eventually("the deleted service gone from the node's view", sees(lab, keep, gone=(drop,)))
