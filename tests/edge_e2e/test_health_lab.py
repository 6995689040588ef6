"""Edge health in the lab (docs/health.md, issue 6): every simulated node runs a health agent that
probes its pool peers and posts votes through the devcluster; `edgenodes/<n>/health` (kubectl get --raw)
gives the verdict. Five nodes: hangzhou = edge-0, edge-2, edge-4 (so a verdict has 2 other members),
beijing = edge-1, edge-3. aggapi runs its health eviction with a grace period of GRACE seconds: a
stopped node's sample pod `sample-<node>` is evicted, a cut link or a cut-off pool evicts nothing."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from support.aggapi import kubectl
from support.etcd import EtcdServer
from support.lab import EXTRA_POLICY, EXTRA_TOKENS, free_node_addresses

from aggapi.devcluster import labcontrol
from aggapi.devcluster.labhealth import PEER_PORT, HealthTiming
from aggapi.devcluster.labkit import free_port
from aggapi.devcluster.labnodes import check_bindable
from aggapi.devlab import Lab, LabConfig, control_link

pytestmark = pytest.mark.slow

T = TypeVar("T")
log = logging.getLogger(__name__)
HANGZHOU = ["edge-0", "edge-2", "edge-4"]
BEIJING = ["edge-1", "edge-3"]
FAST = HealthTiming(
    period=0.5, probe_timeout=0.5, failure_threshold=2, success_threshold=1, probes_per_period=3
)
GRACE = 2.0  # aggapi's --health-eviction-grace-period


def node_addresses(count: int) -> tuple[str, ...]:
    """free_node_addresses (free on 10250) also free on the health agents' peer port: another lab's
    agents, or their connections in TIME_WAIT, may hold <address>:10266."""
    for _ in range(20):
        addrs = free_node_addresses(count)
        try:
            for a in addrs:
                check_bindable(a, PEER_PORT)
        except RuntimeError:
            continue
        return addrs
    raise RuntimeError(f"no {count} addresses free on both 10250 and {PEER_PORT}")


@pytest.fixture(scope="module")
def lab(etcd_server: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    cfg = LabConfig(
        tmp_path_factory.mktemp("health-lab"),
        port=free_port(),
        aggapi_port=free_port(),
        etcd_servers=etcd_server.client_url,
        run_id=uuid.uuid4().hex[:8],
        check_interval="500ms",
        extra_tokens=EXTRA_TOKENS,
        extra_policy=EXTRA_POLICY,
        say=log.info,
        nodes=5,
        node_addresses=node_addresses(5),
        health=FAST,
        health_eviction_grace_period=f"{GRACE:g}s",
    )
    lab = Lab(cfg)
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


def eventually(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.5)


def health(lab: Lab, node: str) -> dict[str, Any]:
    res = kubectl(lab.kubeconfig, "get", "--raw", f"/apis/edge.aggapi.io/v1alpha1/edgenodes/{node}/health")
    assert res.returncode == 0, res.stderr
    obj: dict[str, Any] = json.loads(res.stdout)
    return obj


def verdicts(lab: Lab, nodes: list[str], want: str) -> Callable[[], dict[str, dict[str, Any]] | None]:
    def probe() -> dict[str, dict[str, Any]] | None:
        got = {n: health(lab, n) for n in nodes}
        return got if all(h["verdict"] == want for h in got.values()) else None

    return probe


def ready(lab: Lab, node: str) -> str:
    res = kubectl(lab.kubeconfig, "get", "node", node, "-o", "json")
    assert res.returncode == 0, res.stderr
    conds = json.loads(res.stdout)["status"]["conditions"]
    return str(next(c for c in conds if c["type"] == "Ready")["status"])


def pod_present(lab: Lab, node: str) -> bool:
    """Whether `sample-<node>` is in the devcluster (False only on NotFound)."""
    res = kubectl(lab.kubeconfig, "get", "pod", f"sample-{node}", "-o", "name")
    if res.returncode != 0 and "NotFound" in res.stderr:
        return False
    assert res.returncode == 0, res.stderr
    return True


def pods_stay(lab: Lab, nodes: list[str], seconds: float) -> None:
    """The nodes' sample pods are present throughout `seconds` (at least the grace period)."""
    deadline = time.monotonic() + seconds
    while True:
        assert all(pod_present(lab, n) for n in nodes), {n: pod_present(lab, n) for n in nodes}
        if time.monotonic() > deadline:
            return
        time.sleep(0.5)


def all_healthy(lab: Lab, timeout: float = 30.0) -> None:
    eventually("every node Healthy", verdicts(lab, HANGZHOU + BEIJING, "Healthy"), timeout)


def test_peers_vote_every_node_healthy(lab: Lab) -> None:
    all_healthy(lab)
    h = health(lab, "edge-0")
    assert h["pool"] == "hangzhou"
    assert h["quorum"]["members"] == 2 and h["quorum"]["needed"] == 2
    assert {v["voter"] for v in h["votes"]} == {"edge-2", "edge-4"}
    assert health(lab, "edge-1")["quorum"]["members"] == 1


def test_cut_cloud_link_stays_healthy(lab: Lab) -> None:
    all_healthy(lab)
    assert lab.health is not None
    lab.health.cut_link("edge-0")
    try:
        eventually("edge-0 NotReady", lambda: ready(lab, "edge-0") in ("Unknown", "False") or None)
        h = health(lab, "edge-0")
        assert h["verdict"] == "Healthy", h
        assert {v["result"] for v in h["votes"]} == {"Healthy"}
        pods_stay(lab, ["edge-0"], GRACE + 3)  # nothing evicted, however long the cut lasts
        assert health(lab, "edge-0")["verdict"] == "Healthy"
    finally:
        lab.health.restore_link("edge-0")
    eventually("edge-0 Ready again", lambda: ready(lab, "edge-0") == "True" or None)


def test_stopped_node_is_unhealthy(lab: Lab) -> None:
    all_healthy(lab)
    assert lab.health is not None
    lab.health.stop_node("edge-4")
    try:
        (down,) = eventually("edge-4 Unhealthy", verdicts(lab, ["edge-4"], "Unhealthy")).values()
        assert {v["voter"] for v in down["votes"] if v["result"] == "Unhealthy"} == {"edge-0", "edge-2"}
        assert health(lab, "edge-0")["verdict"] != "Unhealthy"  # its peers are not blamed
        # After the grace period its pod is evicted (the controller reads verdicts every 1 s).
        eventually("sample-edge-4 evicted", lambda: not pod_present(lab, "edge-4") or None, GRACE + 15)
        assert all(pod_present(lab, n) for n in ["edge-0", "edge-1", "edge-2", "edge-3"])
    finally:
        lab.health.start_node("edge-4")
    eventually("edge-4 Healthy again", verdicts(lab, ["edge-4"], "Healthy"))
    if not pod_present(lab, "edge-4"):
        lab.health.recreate_pod("edge-4")  # as the lab made it, now that nothing evicts it again
    pods_stay(lab, ["edge-4"], GRACE + 1)
    all_healthy(lab)


def test_pool_cut_off_is_unknown(lab: Lab) -> None:
    all_healthy(lab)
    assert lab.health is not None
    lab.health.cut_pool("beijing")
    try:
        eventually("beijing Unknown", verdicts(lab, BEIJING, "Unknown"))
        # Unknown, never Unhealthy, for as long as the cut lasts (past the probes' failure threshold and
        # the eviction grace period), and nothing is evicted.
        deadline = time.monotonic() + GRACE + 3
        while time.monotonic() < deadline:
            assert all(health(lab, n)["verdict"] == "Unknown" for n in BEIJING)
            assert all(pod_present(lab, n) for n in BEIJING)
            time.sleep(0.5)
        assert all(health(lab, n)["verdict"] == "Healthy" for n in HANGZHOU)
    finally:
        lab.health.restore_pool("beijing")
    all_healthy(lab)


def aggapi_dev(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aggapi", "dev", "--dir", str(lab.state), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_aggapi_dev_cut_and_heal_commands(lab: Lab) -> None:
    """`aggapi dev --dir DIR cut|heal <node>` from another process, as a user runs it beside the lab."""
    assert aggapi_dev(lab, "cut", "edge-3").returncode == 1  # no lab answers in DIR yet
    (lab.state / labcontrol.PID_FILE).write_text(f"{os.getpid()}\n")  # this process plays `aggapi dev`
    poller = labcontrol.ControlPoller(lab.state, lambda node, action: control_link(lab, node, action))
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            poller.poll()
            time.sleep(0.1)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        all_healthy(lab)
        res = aggapi_dev(lab, "cut", "edge-3")
        assert res.returncode == 0 and "cloud link cut" in res.stdout, res.stderr
        assert lab.link_is_cut("edge-3") and "agent-edge-3" not in lab.children
        eventually(
            "edge-3 NotReady (no heartbeat)", lambda: ready(lab, "edge-3") in ("Unknown", "False") or None
        )
        assert aggapi_dev(lab, "cut", "edge-3").stdout.strip() == "edge-3: the cloud link was already cut"
        bad = aggapi_dev(lab, "cut", "edge-99")
        assert bad.returncode == 1 and "no edge node 'edge-99'" in bad.stderr, bad
        res = aggapi_dev(lab, "heal", "edge-3")
        assert res.returncode == 0 and "restored" in res.stdout, res.stderr
        eventually("edge-3 Ready again", lambda: ready(lab, "edge-3") == "True" or None)
        assert "agent-edge-3" in lab.children
    finally:
        stop.set()
        thread.join(5)
        if lab.link_is_cut("edge-3"):
            lab.heal_link("edge-3")
        (lab.state / labcontrol.PID_FILE).unlink(missing_ok=True)
    all_healthy(lab)
