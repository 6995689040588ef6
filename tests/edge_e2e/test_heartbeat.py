"""Node heartbeats in the lab: each kubelet-sim renews its Lease `kube-node-lease/<node>` and patches its
Node's Ready condition (as system:node:<name>, every 2s in the lab); the devcluster's node lifecycle
stand-in marks a node whose heartbeats stop Ready=Unknown and taints it unreachable (grace 6s in the
lab); aggapi's pool controller follows, and `kubectl get np` shows it. Starting the kubelet-sim again
brings the node back to Ready and the taints away."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from support.aggapi import kubectl
from support.etcd import EtcdServer
from support.lab import start_lab

from aggapi.devcluster.nodelifecycle import last_heartbeat, mark_unknown, wanted_taints
from aggapi.devlab import Lab
from edge.kubelet_sim.heartbeat import ready_patch

pytestmark = pytest.mark.slow

T = TypeVar("T")
UNREACHABLE = "node.kubernetes.io/unreachable"


@pytest.fixture(scope="module")
def hb_lab(etcd_server: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = start_lab(tmp_path_factory.mktemp("heartbeat-lab"), etcd_server.client_url, nodes=2)
    try:
        yield lab
    finally:
        lab.stop()


def eventually(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.5)


def pools(lab: Lab) -> dict[str, list[str]] | None:
    res = kubectl(lab.kubeconfig, "get", "np")
    if res.returncode != 0:
        return None
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "READYNODES", "NOTREADYNODES", "AGE"]
    return {line.split()[0]: line.split()[2:4] for line in lines[1:]}


def pools_are(lab: Lab, want: dict[str, list[str]]) -> Callable[[], bool | None]:
    return lambda: pools(lab) == want or None


def node(lab: Lab, name: str) -> dict[str, Any]:
    res = kubectl(lab.kubeconfig, "get", "node", name, "-o", "json")
    assert res.returncode == 0, res.stderr
    obj: dict[str, Any] = json.loads(res.stdout)
    return obj


def ready(obj: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")


def node_when(lab: Lab, name: str, status: str) -> Callable[[], dict[str, Any] | None]:
    def probe() -> dict[str, Any] | None:
        obj = node(lab, name)
        return obj if ready(obj)["status"] == status else None

    return probe


def taint_keys(obj: dict[str, Any]) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in obj.get("spec", {}).get("taints") or []}


def test_kubelets_renew_their_leases(hb_lab: Lab) -> None:
    code, lease = hb_lab.admin().get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1")
    assert code == 200, lease
    assert lease["spec"]["holderIdentity"] == "edge-1"
    assert lease["spec"]["leaseDurationSeconds"] == 40
    first = lease["spec"]["renewTime"]

    def renewed() -> bool | None:
        _, later = hb_lab.admin().get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1")
        return later["spec"]["renewTime"] > first or None

    eventually("edge-1's lease renewed", renewed, timeout=20)
    assert lease["metadata"]["ownerReferences"][0]["name"] == "edge-1"


def test_ready_counts_follow_kubelet_heartbeats(hb_lab: Lab) -> None:
    both_ready = {"hangzhou": ["1", "0"], "beijing": ["1", "0"]}
    eventually("both pools with one ready node", pools_are(hb_lab, both_ready))
    assert ready(node(hb_lab, "edge-0"))["status"] == "True"

    hb_lab.stop_kubelet("edge-0")  # edge-0 is in hangzhou
    try:
        down = eventually("edge-0 Ready=Unknown", node_when(hb_lab, "edge-0", "Unknown"))
        assert ready(down)["reason"] == "NodeStatusUnknown"
        assert {(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")} <= taint_keys(down)
        eventually(
            "hangzhou 0 ready 1 not ready",
            pools_are(hb_lab, {"hangzhou": ["0", "1"], "beijing": ["1", "0"]}),
        )
        assert ready(node(hb_lab, "edge-1"))["status"] == "True"  # the other node is untouched
        assert not taint_keys(node(hb_lab, "edge-1"))
    finally:
        hb_lab.start_kubelet("edge-0")

    back = eventually("edge-0 Ready=True", node_when(hb_lab, "edge-0", "True"))
    assert ready(back)["reason"] == "KubeletReady"
    eventually(
        "edge-0's unreachable taints removed",
        lambda: not {k for k, _ in taint_keys(node(hb_lab, "edge-0"))} & {UNREACHABLE} or None,
    )
    eventually("both pools ready again", pools_are(hb_lab, both_ready))


# ---- the pieces, without processes -----------------------------------------------------------------

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_lifecycle_pieces() -> None:
    node: dict[str, Any] = {
        "metadata": {"name": "n", "creationTimestamp": "2025-01-01T11:00:00Z"},
        "spec": {"taints": [{"key": "other", "effect": "NoSchedule"}]},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2025-01-01T11:59:00Z"}]
        },
    }
    lease = {"spec": {"renewTime": "2025-01-01T11:59:50.123456Z"}}
    assert last_heartbeat(node, lease) == datetime(2025, 1, 1, 11, 59, 50, 123456, tzinfo=UTC)
    assert last_heartbeat(node, None) == datetime(2025, 1, 1, 11, 59, tzinfo=UTC)
    assert wanted_taints(node, "True", NOW) is None
    unknown = mark_unknown(node, NOW)
    assert ready(unknown) | {} == {
        "type": "Ready",
        "status": "Unknown",
        "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.",
        "lastHeartbeatTime": "2025-01-01T11:59:00Z",
        "lastTransitionTime": "2025-01-01T12:00:00Z",
    }
    taints = wanted_taints(node, "Unknown", NOW)
    assert taints is not None
    assert [(t["key"], t["effect"]) for t in taints] == [
        ("other", "NoSchedule"),
        (UNREACHABLE, "NoSchedule"),
        (UNREACHABLE, "NoExecute"),
    ]
    node["spec"]["taints"] = taints
    assert wanted_taints(node, "Unknown", NOW) is None
    assert wanted_taints(node, "True", NOW) == [{"key": "other", "effect": "NoSchedule"}]


def test_kubelet_ready_patch_keeps_transition_time_while_ready() -> None:
    ready_since = {"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T10:00:00Z"}
    patch = ready_patch({"status": {"conditions": [ready_since]}}, NOW)
    cond = patch["status"]["conditions"][0]
    assert cond["lastTransitionTime"] == "2025-01-01T10:00:00Z"
    assert cond["lastHeartbeatTime"] == "2025-01-01T12:00:00Z"
    was_unknown = {**ready_since, "status": "Unknown"}
    cond = ready_patch({"status": {"conditions": [was_unknown]}}, NOW)["status"]["conditions"][0]
    assert (cond["status"], cond["lastTransitionTime"]) == ("True", "2025-01-01T12:00:00Z")
