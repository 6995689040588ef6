"""The NodePool controller through a real `aggapi serve` on the session devcluster: pool status follows
nodes joining, leaving and changing readiness; spec labels/annotations/taints are pushed with
previous-attributes, removed keys removed, foreign keys untouched; deleting a pool with nodes is refused;
topology via `kubectl get --raw`."""

from __future__ import annotations

import json
import uuid
from typing import Any

from npkit import (
    POOL_LABEL,
    PREVIOUS,
    NPEnv,
    delete_node,
    eventually,
    get_node,
    make_node,
    patch_node,
    pool_status,
    set_ready,
)
from support.aggapi import NP, kubectl, nodepool


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def create_pool(env: NPEnv, name: str, **spec: Any) -> dict[str, Any]:
    code, out = env.agg.request("POST", NP, nodepool(name, **spec))
    assert code == 201, out
    result: dict[str, Any] = out
    return result


def members(env: NPEnv, pool: str) -> Any:
    return lambda: pool_status(env, pool).get("nodes")


def test_status_follows_join_leave_and_readiness(np_env: NPEnv) -> None:
    env = np_env
    pool, a, b, c = uid("np-st"), uid("n-a"), uid("n-b"), uid("n-c")
    created = create_pool(env, pool)
    assert created["metadata"]["labels"]["nodepool.openyurt.io/type"] == "edge"
    try:
        make_node(env, a, "127.0.3.1", {POOL_LABEL: pool})
        make_node(env, b, "127.0.3.2", {POOL_LABEL: pool})
        make_node(env, c, "127.0.3.3", {})

        def counts() -> tuple[list[str], int, int]:
            st = pool_status(env, pool)
            return st.get("nodes", []), st.get("readyNodeNum", -1), st.get("unreadyNodeNum", -1)

        eventually(lambda: counts() == (sorted([a, b]), 2, 0), "two ready members")
        cond = pool_status(env, pool)["conditions"][0]
        assert cond["type"] == "NodesReady" and cond["status"] == "True"

        set_ready(env, b, False)
        eventually(lambda: counts() == (sorted([a, b]), 1, 1), "b not ready")
        cond = pool_status(env, pool)["conditions"][0]
        assert cond["status"] == "False" and cond["reason"] == "NodesNotReady" and b in cond["message"]

        patch_node(env, c, {"metadata": {"labels": {POOL_LABEL: pool}}})  # c joins
        eventually(lambda: counts() == (sorted([a, b, c]), 2, 1), "c joined")

        patch_node(env, a, {"metadata": {"labels": {POOL_LABEL: None}}})  # a leaves
        eventually(lambda: counts() == (sorted([b, c]), 1, 1), "a left")

        delete_node(env, b)
        eventually(lambda: counts() == ([c], 1, 0), "b deleted")
        set_ready(env, c, False)
        eventually(lambda: counts() == ([c], 0, 1), "c not ready")
        delete_node(env, c)
        eventually(lambda: counts() == ([], 0, 0), "empty pool")
        assert pool_status(env, pool)["conditions"][0]["reason"] == "NoNodes"
    finally:
        for n in (a, b, c):
            delete_node(env, n)
        env.agg.request("DELETE", f"{NP}/{pool}")


def _pushed(node: dict[str, Any]) -> dict[str, Any]:
    raw = node["metadata"].get("annotations", {}).get(PREVIOUS)
    return json.loads(raw) if raw else {}


def test_attributes_pushed_updated_and_removed(np_env: NPEnv) -> None:
    env = np_env
    pool, other, name = uid("np-at"), uid("np-ot"), uid("n-at")
    foreign_taint = {"key": "foreign", "value": "x", "effect": "NoSchedule"}
    create_pool(
        env,
        pool,
        labels={"team": "red", "tier": "edge"},
        annotations={"owner": "ops"},
        taints=[{"key": "dedicated", "value": "edge", "effect": "NoSchedule"}],
    )
    create_pool(env, other)
    try:
        make_node(
            env,
            name,
            "127.0.3.10",
            {POOL_LABEL: pool, "keep": "me"},
            metadata={"annotations": {"foreign": "yes"}},
            spec={"taints": [foreign_taint]},
        )

        def pushed_initial() -> bool:
            node = get_node(env, name)
            labels, ann = node["metadata"]["labels"], node["metadata"].get("annotations", {})
            return labels.get("team") == "red" and labels.get("tier") == "edge" and ann.get("owner") == "ops"

        eventually(pushed_initial, "labels and annotations pushed")
        node = get_node(env, name)
        assert {"key": "dedicated", "value": "edge", "effect": "NoSchedule"} in node["spec"]["taints"]
        assert foreign_taint in node["spec"]["taints"]
        assert node["metadata"]["labels"]["keep"] == "me"
        assert node["metadata"]["annotations"]["foreign"] == "yes"
        assert _pushed(node) == {
            "labels": {"team": "red", "tier": "edge"},
            "annotations": {"owner": "ops"},
            "taints": [{"key": "dedicated", "value": "edge", "effect": "NoSchedule"}],
        }

        # The pool drops a label and the taint, changes a label, adds a NoExecute taint (same key).
        code, cur = env.agg.get(f"{NP}/{pool}")
        cur["spec"]["labels"] = {"team": "blue"}
        cur["spec"]["taints"] = [{"key": "dedicated", "value": "edge", "effect": "NoExecute"}]
        code, out = env.agg.request("PUT", f"{NP}/{pool}", cur)
        assert code == 200, out

        def updated() -> bool:
            node = get_node(env, name)
            labels, taints = node["metadata"]["labels"], node["spec"].get("taints", [])
            return (
                labels.get("team") == "blue"
                and "tier" not in labels
                and {"key": "dedicated", "value": "edge", "effect": "NoExecute"} in taints
                and not any(t["key"] == "dedicated" and t["effect"] == "NoSchedule" for t in taints)
            )

        eventually(updated, "pool changes pushed, removed keys removed")
        node = get_node(env, name)
        assert node["metadata"]["labels"]["keep"] == "me"
        assert node["metadata"]["annotations"]["foreign"] == "yes"
        assert foreign_taint in node["spec"]["taints"]
        assert _pushed(node)["labels"] == {"team": "blue"}

        # The node moves to a pool that pushes nothing: it loses everything the first pool gave it.
        patch_node(env, name, {"metadata": {"labels": {POOL_LABEL: other}}})

        def cleaned() -> bool:
            node = get_node(env, name)
            meta = node["metadata"]
            return (
                "team" not in meta["labels"]
                and "owner" not in meta.get("annotations", {})
                and PREVIOUS not in meta.get("annotations", {})
                and node["spec"].get("taints") == [foreign_taint]
            )

        eventually(cleaned, "a node leaving its pool loses what the pool pushed")
        node = get_node(env, name)
        assert node["metadata"]["labels"]["keep"] == "me"
        assert node["metadata"]["annotations"]["foreign"] == "yes"
    finally:
        delete_node(env, name)
        env.agg.request("DELETE", f"{NP}/{pool}")
        env.agg.request("DELETE", f"{NP}/{other}")


def test_delete_refused_while_nodes_remain(np_env: NPEnv) -> None:
    env = np_env
    pool, name = uid("np-del"), uid("n-del")
    create_pool(env, pool)
    make_node(env, name, "127.0.3.20", {POOL_LABEL: pool})
    try:
        eventually(lambda: pool_status(env, pool).get("nodes") == [name], "member seen")
        code, status = env.agg.request("DELETE", f"{NP}/{pool}")
        assert code == 409, status
        assert status["kind"] == "Status" and status["reason"] == "Conflict"
        assert name in status["message"] and POOL_LABEL in status["message"]
        assert status["details"]["name"] == pool and status["details"]["kind"] == "nodepools"
        res = kubectl(env.kubeconfig, "delete", "nodepool", pool)
        assert res.returncode != 0 and "still has 1 node(s)" in res.stderr
        assert env.agg.get(f"{NP}/{pool}")[0] == 200

        patch_node(env, name, {"metadata": {"labels": {POOL_LABEL: None}}})
        eventually(lambda: env.agg.request("DELETE", f"{NP}/{pool}")[0] == 200, "deletion allowed once empty")
        assert env.agg.get(f"{NP}/{pool}")[0] == 404
    finally:
        delete_node(env, name)
        env.agg.request("DELETE", f"{NP}/{pool}")
