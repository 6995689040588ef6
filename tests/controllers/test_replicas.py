"""Two `aggapi serve` replicas (same etcd prefix, same lease) on the session devcluster: exactly one
leads and only it reconciles; SIGKILL the leader → the other takes over and keeps pools current."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest
from npkit import (
    POOL_LABEL,
    NPEnv,
    delete_node,
    eventually,
    get_node,
    make_node,
    pool_status,
    start_np_aggapi,
)
from support.aggapi import NP, nodepool
from support.devcluster import Devcluster
from support.etcd import EtcdServer

from aggapi.devlab import LabPKI


def metric(env: NPEnv, name: str, labels: str) -> float:
    code, text = env.agg.get("/metrics")
    assert code == 200
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", str(text), re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.slow
def test_only_leader_reconciles_and_the_other_takes_over(
    etcd_server: EtcdServer, pki: LabPKI, devcluster: Devcluster, tmp_path: Path
) -> None:
    lease, prefix = f"np-{uuid.uuid4().hex[:8]}", f"/rep-{uuid.uuid4().hex[:8]}"
    one = start_np_aggapi(etcd_server, pki, devcluster, tmp_path / "one", lease=lease, prefix=prefix)
    two = start_np_aggapi(etcd_server, pki, devcluster, tmp_path / "two", lease=lease, prefix=prefix)
    replicas = [one, two]
    pool, first, second = f"np-rep-{lease[3:]}", f"n-r1-{lease[3:]}", f"n-r2-{lease[3:]}"
    leader_metric = ("aggapi_leader_election_master_status", f'name="{lease}"')
    reconciles = "aggapi_controller_reconcile_total"
    try:
        assert one.agg.request("POST", NP, nodepool(pool))[0] == 201
        make_node(one, first, "127.0.3.41", {POOL_LABEL: pool})
        eventually(lambda: pool_status(one, pool).get("nodes") == [first], "the pool counts its node")

        leaders = [r for r in replicas if metric(r, *leader_metric) == 1.0]
        assert len(leaders) == 1
        leader = leaders[0]
        follower = two if leader is one else one
        ok = 'controller="nodepool",result="success"'
        assert metric(leader, reconciles, ok) > 0
        assert metric(follower, reconciles, ok) == 0  # the follower never reconciled anything
        # No double writes, seen in the objects themselves: once converged, neither the pool's status
        # nor the node the pool pushes onto moves again (two writers would keep bumping them).
        pool_rv = one.agg.get(f"{NP}/{pool}")[1]["metadata"]["resourceVersion"]
        node_rv = get_node(one, first)["metadata"]["resourceVersion"]
        time.sleep(2)
        assert one.agg.get(f"{NP}/{pool}")[1]["metadata"]["resourceVersion"] == pool_rv
        assert get_node(one, first)["metadata"]["resourceVersion"] == node_rv

        assert leader.aggapi.proc is not None
        leader.aggapi.proc.kill()  # dies without releasing the lease
        leader.aggapi.proc.wait(10)
        eventually(lambda: metric(follower, *leader_metric) == 1.0, "the follower takes over", timeout=60)
        make_node(follower, second, "127.0.3.42", {POOL_LABEL: pool})
        eventually(
            lambda: pool_status(follower, pool).get("nodes") == sorted([first, second]),
            "the new leader keeps the pool current",
        )
        assert metric(follower, reconciles, ok) > 0
    finally:
        delete_node(one, first)
        delete_node(one, second)
        for r in replicas:
            r.aggapi.stop()
