"""Eviction by verdict (issue 6): a real `aggapi serve` (controllers on the session devcluster, no tunnel,
--health-vote-ttl=3s, --health-eviction-grace-period=2s), pool peers voting with node certificates, pods
and PodDisruptionBudgets in the devcluster (its pods/eviction subresource)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from npkit import eventually
from support.aggapi import AggapiServer
from support.devcluster import Devcluster
from support.etcd import EtcdServer

from aggapi.controllers.health import HealthEvictionConfig, HealthEvictionController, eviction_delay
from aggapi.devcluster.eviction import disruptions_allowed
from aggapi.devcluster.labkit import JSONClient
from aggapi.devlab import LabPKI
from aggapi.machinery.timefmt import format_rfc3339
from certs.files import load_or_create_ca, write_pair
from certs.pki import issue_client
from edge.kubelet_sim import NodeIdentity, node_object

EN = "/apis/edge.aggapi.io/v1alpha1/edgenodes"
POOL_LABEL = "apps.openyurt.io/nodepool"
AUTONOMY = "node.openyurt.io/autonomy-duration"
NS = "default"
PODS = f"/api/v1/namespaces/{NS}/pods"
PDBS = f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets"
MERGE = {"Content-Type": "application/merge-patch+json"}
GRACE = 2.0
KEYS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
_random = random.SystemRandom()


# ---- pure rules -----------------------------------------------------------------------------------


def _node(annotation: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "n"}
    if annotation is not None:
        meta["annotations"] = {AUTONOMY: annotation}
    return {"metadata": meta}


def test_eviction_delay_follows_autonomy() -> None:
    assert eviction_delay(_node(), 300) == 300
    assert eviction_delay(_node("0"), 300) is None  # never
    assert eviction_delay(_node("10m"), 300) == 600  # max(grace, D)
    assert eviction_delay(_node("1m"), 300) == 300
    assert eviction_delay(_node("bogus"), 300) is None  # left alone, like the autonomy controller


class _Nodes:
    """What the controller reads of its Node informer: the cached items."""

    def __init__(self, *nodes: dict[str, Any]) -> None:
        self.nodes = list(nodes)

    def items(self) -> list[dict[str, Any]]:
        return self.nodes


def test_the_grace_period_runs_from_the_first_unhealthy_verdict_and_resets() -> None:
    now = [1000.0]
    verdict = {"n": "Unhealthy"}
    node = {"metadata": {"name": "n", "labels": {"openyurt.io/is-edge-worker": "true"}}}
    ctl = HealthEvictionController(
        None,
        _Nodes(node),  # type: ignore[arg-type]
        lambda name: verdict.get(name, "Unknown"),
        config=HealthEvictionConfig(grace_period=60),
        clock=lambda: now[0],
    )
    ctl.tick()
    assert not ctl.due(node)
    now[0] += 59.9
    ctl.tick()
    assert not ctl.due(node)
    now[0] += 0.1
    assert ctl.due(node)
    # Any other verdict in between starts the count again.
    verdict["n"] = "Unknown"
    ctl.tick()
    assert not ctl.due(node)
    verdict["n"] = "Unhealthy"
    ctl.tick()
    now[0] += 30
    assert not ctl.due(node)
    now[0] += 30
    assert ctl.due(node)
    # Autonomy "0": never; a longer autonomy duration: that long.
    node["metadata"]["annotations"] = {AUTONOMY: "0"}
    assert not ctl.due(node)
    node["metadata"]["annotations"] = {AUTONOMY: "2m"}
    assert not ctl.due(node)
    now[0] += 60
    assert ctl.due(node)


def _pod(labels: dict[str, str], deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


def test_disruptions_allowed() -> None:
    sel = {"selector": {"matchLabels": {"app": "x"}}}
    pods = [_pod({"app": "x"}), _pod({"app": "x"}), _pod({"app": "x"}, deleting=True), _pod({"app": "y"})]
    assert disruptions_allowed({"spec": {**sel, "minAvailable": 1}}, pods) == 1
    assert disruptions_allowed({"spec": {**sel, "minAvailable": 2}}, pods) == 0
    assert disruptions_allowed({"spec": {**sel, "minAvailable": "50%"}}, pods) == 0  # ceil(1.5) = 2
    assert disruptions_allowed({"spec": {**sel, "maxUnavailable": 1}}, pods) == 0  # one already going
    assert disruptions_allowed({"spec": {**sel, "maxUnavailable": 2}}, pods) == 1
    assert disruptions_allowed({"spec": sel}, pods) == 2
    assert disruptions_allowed({"spec": {"minAvailable": 0}}, pods) == 0  # nil selector: no pod


# ---- against aggapi + devcluster ------------------------------------------------------------------


@dataclass
class Env:
    aggapi: AggapiServer
    devcluster: Devcluster
    workdir: Path
    clients: dict[str, JSONClient] = field(default_factory=dict)

    @property
    def dc(self) -> JSONClient:
        return self.devcluster.admin()

    @property
    def agg(self) -> JSONClient:
        pki = self.aggapi.pki
        return JSONClient(self.aggapi.url, pki.ca, (pki.admin_cert, pki.admin_key))

    def as_node(self, node: str) -> JSONClient:
        if node not in self.clients:
            pki = self.aggapi.pki
            ca = load_or_create_ca(pki.ca.parent, "ca", common_name="aggapi-dev-ca")
            pair = issue_client(ca, common_name=f"system:node:{node}", organizations=["system:nodes"])
            cert, key = self.workdir / f"node-{node}.crt", self.workdir / f"node-{node}.key"
            write_pair(pair, cert, key)
            self.clients[node] = JSONClient(self.aggapi.url, pki.ca, (cert, key))
        return self.clients[node]


@pytest.fixture(scope="module")
def env(
    etcd_server: EtcdServer, pki: LabPKI, devcluster: Devcluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("health-eviction")
    kubeconfig = devcluster.kubeconfig(work / "devcluster.kubeconfig")
    server = AggapiServer(
        pki,
        etcd_server.client_url,
        work / "aggapi",
        extra_args=(
            f"--kubeconfig={kubeconfig}",
            "--tunnel-port=0",
            f"--leader-elect-resource-name=he-{_random.randrange(16**6):06x}",
            "--leader-elect-lease-duration=3s",
            "--leader-elect-renew-deadline=2s",
            "--leader-elect-retry-period=250ms",
            "--health-vote-ttl=3s",
            f"--health-eviction-grace-period={GRACE:g}s",
        ),
    )
    server.start()
    try:
        yield Env(server, devcluster, work)
    finally:
        server.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{_random.randrange(16**6):06x}"


def make_pool(
    env: Env, pool: str, count: int, annotations: dict[int, dict[str, str]] | None = None
) -> list[str]:
    names = []
    for i in range(count):
        name = f"{pool}-n{i}"
        obj = node_object(
            NodeIdentity(name, f"127.0.4.{_random.randrange(1, 250)}"), labels={POOL_LABEL: pool}
        )
        if annotations and i in annotations:
            obj["metadata"]["annotations"] = annotations[i]
        env.dc.apply("/api/v1/nodes", obj)
        names.append(name)
    return names


def make_pod(
    env: Env, name: str, node: str, labels: dict[str, str] | None = None, running: bool = False
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]},
    }
    env.dc.apply(PODS, pod)
    if running:
        code, out = env.dc.request(
            "PATCH", f"{PODS}/{name}/status", {"status": {"phase": "Running"}}, headers=MERGE
        )
        assert code == 200, out


def pod_exists(env: Env, name: str) -> bool:
    code, _ = env.dc.get(f"{PODS}/{name}")
    return code == 200


def cleanup(env: Env, nodes: list[str], pods: list[str]) -> None:
    for p in pods:
        env.dc.request("DELETE", f"{PODS}/{p}")
    for n in nodes:
        env.dc.request("DELETE", f"/api/v1/nodes/{n}")


def vote_doc(voter: str, target: str, result: str) -> dict[str, Any]:
    return {
        "apiVersion": "edge.aggapi.io/v1alpha1",
        "kind": "HealthVote",
        "voter": voter,
        "target": target,
        "observedAt": format_rfc3339(datetime.now(UTC)),
        "result": result,
        "probes": {},
    }


@contextmanager
def voting(env: Env, voters: list[str], target: str, result: str = "Unhealthy") -> Iterator[None]:
    """`voters` keep voting `result` about `target` every 0.5 s (votes live 3 s)."""
    stop = threading.Event()
    errors: list[Any] = []

    def loop() -> None:
        while not stop.is_set():
            for v in voters:
                code, body = env.as_node(v).request(
                    "POST", f"{EN}/{target}/health", vote_doc(v, target, result)
                )
                if code != 201:
                    errors.append((code, body))
            stop.wait(0.5)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)
    assert not errors, errors[:3]


def verdict(env: Env, node: str) -> str:
    code, body = env.agg.get(f"{EN}/{node}/health")
    assert code == 200, body
    return str(body["verdict"])


def wait_for_nodes(env: Env, names: list[str]) -> None:
    for n in names:
        eventually(lambda n=n: env.agg.get(f"{EN}/{n}")[0] == 200, f"edgenode {n} known to aggapi")  # type: ignore[misc]


def tolerations(env: Env, pod: str) -> list[dict[str, Any]]:
    code, body = env.dc.get(f"{PODS}/{pod}")
    assert code == 200, body
    return list(body["spec"].get("tolerations") or [])


def managed(tols: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        t["key"]: t.get("tolerationSeconds")
        for t in tols
        if t.get("key") in KEYS and t["effect"] == "NoExecute"
    }


def test_edge_pods_get_forever_tolerations_unless_autonomy_sets_a_duration(env: Env) -> None:
    pool = unique("tol")
    nodes = make_pool(env, pool, 2, {1: {AUTONOMY: "10m"}})
    plain = f"{pool}-cloud"
    env.dc.apply("/api/v1/nodes", node_object(NodeIdentity(plain, "127.0.4.251")))
    pods = [f"{pool}-p0", f"{pool}-p1", f"{pool}-p2"]
    try:
        make_pod(env, pods[0], nodes[0])
        make_pod(env, pods[1], nodes[1])
        make_pod(env, pods[2], plain)
        eventually(lambda: managed(tolerations(env, pods[0])) == dict.fromkeys(KEYS), "forever tolerations")
        eventually(
            lambda: managed(tolerations(env, pods[1])) == dict.fromkeys(KEYS, 600), "autonomy's 10m wins"
        )
        time.sleep(1)
        assert tolerations(env, pods[2]) == []  # not an edge node: untouched
    finally:
        cleanup(env, [*nodes, plain], pods)


def test_unhealthy_past_grace_evicts_that_nodes_pods_only(env: Env) -> None:
    pool = unique("evict")
    a, b, c = make_pool(env, pool, 3)
    pods = [f"{pool}-a0", f"{pool}-a1", f"{pool}-b0"]
    try:
        make_pod(env, pods[0], a)
        make_pod(env, pods[1], a, running=True)
        make_pod(env, pods[2], b, running=True)
        wait_for_nodes(env, [a, b, c])
        with voting(env, [b, c], a):
            eventually(lambda: verdict(env, a) == "Unhealthy", "a Unhealthy")
            eventually(
                lambda: not pod_exists(env, pods[0]) and not pod_exists(env, pods[1]), "a's pods evicted"
            )
        assert pod_exists(env, pods[2])
    finally:
        cleanup(env, [a, b, c], pods)


def test_pdb_blocks_eviction_and_the_controller_retries(env: Env) -> None:
    pool = unique("pdb")
    a, b, c = make_pool(env, pool, 3)
    app = unique("app")
    pods = [f"{pool}-a0"]
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": app, "namespace": NS},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}},
    }
    try:
        make_pod(env, pods[0], a, labels={"app": app}, running=True)
        env.dc.apply(PDBS, pdb)
        # The devcluster's Eviction API itself: 429 with a Status.
        code, body = env.dc.request(
            "POST",
            f"{PODS}/{pods[0]}/eviction",
            {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pods[0], "namespace": NS}},
        )
        assert code == 429, body
        assert body["kind"] == "Status" and body["reason"] == "TooManyRequests"
        wait_for_nodes(env, [a, b, c])
        log = env.aggapi.log_file
        with voting(env, [b, c], a):
            eventually(lambda: verdict(env, a) == "Unhealthy", "a Unhealthy")
            eventually(
                lambda: log.read_text().count(f"{NS}/{pods[0]} refused (429") >= 2,
                "the controller retries",
                40,
            )
            assert pod_exists(env, pods[0])
            env.dc.request("DELETE", f"{PDBS}/{app}")
            eventually(lambda: not pod_exists(env, pods[0]), "evicted once the budget is gone", 90)
    finally:
        env.dc.request("DELETE", f"{PDBS}/{app}")
        cleanup(env, [a, b, c], pods)


def test_unknown_never_evicts(env: Env) -> None:
    pool = unique("unknown")
    a, b, c = make_pool(env, pool, 3)
    pods = [f"{pool}-a0"]
    try:
        make_pod(env, pods[0], a, running=True)
        wait_for_nodes(env, [a, b, c])
        with voting(env, [b], a):  # 1 of 2 members voted, 2 needed
            eventually(lambda: len(health_votes(env, a)) == 1, "b's vote counts")
            time.sleep(GRACE * 3)
            assert verdict(env, a) == "Unknown"
            assert pod_exists(env, pods[0])
    finally:
        cleanup(env, [a, b, c], pods)


def health_votes(env: Env, node: str) -> list[Any]:
    code, body = env.agg.get(f"{EN}/{node}/health")
    assert code == 200, body
    return list(body.get("votes") or [])


def test_autonomy_zero_never_evicts(env: Env) -> None:
    pool = unique("forever")
    a, b, c = make_pool(env, pool, 3, {0: {AUTONOMY: "0"}})
    pods = [f"{pool}-a0"]
    try:
        make_pod(env, pods[0], a, running=True)
        wait_for_nodes(env, [a, b, c])
        with voting(env, [b, c], a):
            eventually(lambda: verdict(env, a) == "Unhealthy", "a Unhealthy")
            time.sleep(GRACE * 3)
            assert verdict(env, a) == "Unhealthy"
            assert pod_exists(env, pods[0])
    finally:
        cleanup(env, [a, b, c], pods)
