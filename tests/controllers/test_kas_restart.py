"""The NodePool controller across a kube-apiserver (devcluster) restart: its informers resume or relist,
the leader re-acquires its lease if it lost it, and nodes changed while kube-apiserver was down or after
it came back are reconciled — nothing lost, nothing pushed twice."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from npkit import (
    POOL_LABEL,
    PREVIOUS,
    eventually,
    get_node,
    make_node,
    patch_node,
    pool_status,
    start_np_aggapi,
)
from support.aggapi import NP, nodepool
from support.devcluster import DEV_POLICY, DEV_TOKENS, Devcluster
from support.etcd import EtcdServer

from aggapi.devlab import LabPKI


@pytest.mark.slow
def test_controller_survives_kube_apiserver_restart(
    etcd_server: EtcdServer, pki: LabPKI, tmp_path: Path
) -> None:
    dc = Devcluster(tmp_path / "dc", etcd_server.client_url, DEV_TOKENS, DEV_POLICY)
    dc.start()
    env = None
    try:
        env = start_np_aggapi(etcd_server, pki, dc, tmp_path / "np", lease=f"np-{uuid.uuid4().hex[:8]}")
        pool, a, b = "rs-pool", "rs-a", "rs-b"
        assert env.agg.request("POST", NP, nodepool(pool, labels={"site": "x"}))[0] == 201
        make_node(env, a, "127.0.3.51", {POOL_LABEL: pool})
        eventually(lambda: get_node(env, a)["metadata"]["labels"].get("site") == "x", "pushed before restart")
        rv_before = get_node(env, a)["metadata"]["resourceVersion"]

        dc.stop()
        dc.start()  # same port, PKI and etcd prefix: the same cluster, back after an outage

        make_node(env, b, "127.0.3.52", {POOL_LABEL: pool})
        eventually(lambda: pool_status(env, pool).get("nodes") == [a, b], "status current after restart")
        eventually(lambda: get_node(env, b)["metadata"]["labels"].get("site") == "x", "pushed after restart")
        node_a = get_node(env, a)
        assert node_a["metadata"]["resourceVersion"] == rv_before  # a was already right: not patched again
        assert json.loads(node_a["metadata"]["annotations"][PREVIOUS]) == {"labels": {"site": "x"}}

        patch_node(env, a, {"metadata": {"labels": {POOL_LABEL: None}}})
        eventually(lambda: "site" not in get_node(env, a)["metadata"]["labels"], "a left and lost the label")
    finally:
        if env is not None:
            env.aggapi.stop()
        dc.stop()


@pytest.mark.slow
def test_controller_recovers_when_its_watch_position_is_compacted_away(
    etcd_server: EtcdServer, pki: LabPKI, tmp_path: Path
) -> None:
    """kube-apiserver comes back with the controller's watch position compacted away: the informers
    relist (410 Gone on resume is unit-tested in tests/edgenodes), and the changes made meanwhile are all
    reconciled exactly once."""
    import asyncio

    from support.etcd import start_etcd

    from aggapi.storage.etcd import EtcdClient, EtcdConfig

    dc_etcd = start_etcd(tmp_path / "dc-etcd")  # private: compacting it cuts no one else's history
    dc = Devcluster(tmp_path / "dc", dc_etcd.client_url, DEV_TOKENS, DEV_POLICY)
    dc.start()
    env = None
    try:
        env = start_np_aggapi(etcd_server, pki, dc, tmp_path / "np", lease=f"np-{uuid.uuid4().hex[:8]}")
        pool, a, b = "gone-pool", "gone-a", "gone-b"
        assert env.agg.request("POST", NP, nodepool(pool, labels={"site": "y"}))[0] == 201
        make_node(env, a, "127.0.3.61", {POOL_LABEL: pool})
        eventually(lambda: get_node(env, a)["metadata"]["labels"].get("site") == "y", "pushed before")
        rv_a = get_node(env, a)["metadata"]["resourceVersion"]

        dc.stop()

        async def compact_everything() -> None:
            client = EtcdClient(EtcdConfig((dc_etcd.client_url,)))
            try:
                await client.put(b"/gone-marker", b"x")  # one more revision, so the last one is compactable
                await client.compact(await client.current_revision())
            finally:
                await client.close()

        asyncio.run(compact_everything())
        dc.start()
        make_node(env, b, "127.0.3.62", {POOL_LABEL: pool})
        eventually(lambda: pool_status(env, pool).get("nodes") == [a, b], "status current after the 410")
        eventually(lambda: get_node(env, b)["metadata"]["labels"].get("site") == "y", "pushed after the 410")
        # Whether the informer got 410 Gone on resuming or relisted straight after the broken watch, its
        # old position is gone from etcd's history: it had to list afresh, and did no work twice.
        node_a = get_node(env, a)
        assert node_a["metadata"]["resourceVersion"] == rv_a  # already right: not patched again
        assert json.loads(node_a["metadata"]["annotations"][PREVIOUS]) == {"labels": {"site": "y"}}
    finally:
        if env is not None:
            env.aggapi.stop()
        dc.stop()
        dc_etcd.stop()
