"""The autonomy controller through a real `aggapi serve` on the session devcluster: pods on a node
annotated node.openyurt.io/autonomy-duration get NoExecute tolerations for not-ready/unreachable (changed
and added), the originals are recorded; removing autonomy restores the recorded tolerationSeconds (added
tolerations stay); pods on other nodes are never written; a pool's spec.annotations works through the
NodePool controller; edgenodes show the value."""

from __future__ import annotations

import json
import uuid
from typing import Any

from npkit import MERGE, POOL_LABEL, NPEnv, delete_node, eventually, make_node, patch_node
from support.aggapi import NP, nodepool

AUTONOMY = "node.openyurt.io/autonomy-duration"
ORIGINAL = "node.openyurt.io/original-tolerations"
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
PODS = "/api/v1/namespaces/default/pods"
EN = "/apis/edge.aggapi.io/v1alpha1/edgenodes"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def default_tolerations(seconds: int = 300) -> list[dict[str, Any]]:
    return [
        {"key": k, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}
        for k in (NOT_READY, UNREACHABLE)
    ]


def make_pod(env: NPEnv, name: str, node: str, tolerations: list[dict[str, Any]]) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "sample:1"}],
            **({"tolerations": tolerations} if tolerations else {}),
        },
    }
    return env.dc.apply(PODS, pod)


def get_pod(env: NPEnv, name: str) -> dict[str, Any]:
    code, obj = env.dc.get(f"{PODS}/{name}")
    assert code == 200, obj
    result: dict[str, Any] = obj
    return result


def seconds(pod: dict[str, Any]) -> dict[str, Any]:
    """key → tolerationSeconds ("forever" when absent) of the pod's NoExecute node-lifecycle tolerations."""
    return {
        t["key"]: t.get("tolerationSeconds", "forever")
        for t in pod["spec"].get("tolerations", [])
        if t.get("key") in (NOT_READY, UNREACHABLE) and t.get("effect") == "NoExecute"
    }


def record(pod: dict[str, Any]) -> dict[str, Any] | None:
    raw = pod["metadata"].get("annotations", {}).get(ORIGINAL)
    return json.loads(raw) if raw else None


def annotate(env: NPEnv, node: str, value: str | None) -> None:
    patch_node(env, node, {"metadata": {"annotations": {AUTONOMY: value}}})


def test_tolerations_applied_recorded_and_restored(np_env: NPEnv) -> None:
    env = np_env
    auto, other = uid("au-n"), uid("au-o")
    p_changed, p_added, p_other = uid("au-p1"), uid("au-p2"), uid("au-p3")
    extra = {"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}
    try:
        make_node(env, auto, "127.0.4.1", {})
        make_node(env, other, "127.0.4.2", {})
        make_pod(env, p_changed, auto, [extra, *default_tolerations(300)])
        make_pod(env, p_added, auto, [])
        other_rv = make_pod(env, p_other, other, default_tolerations(300))["metadata"]["resourceVersion"]

        annotate(env, auto, "10m")
        eventually(lambda: seconds(get_pod(env, p_changed)) == {NOT_READY: 600, UNREACHABLE: 600}, "changed")
        eventually(lambda: seconds(get_pod(env, p_added)) == {NOT_READY: 600, UNREACHABLE: 600}, "added")
        changed = get_pod(env, p_changed)
        assert changed["spec"]["tolerations"][0] == extra  # other tolerations untouched, order kept
        assert record(changed) == {"tolerations": default_tolerations(300), "added": []}
        assert record(get_pod(env, p_added)) == {"tolerations": [], "added": [NOT_READY, UNREACHABLE]}

        annotate(env, auto, None)  # autonomy removed: recorded values come back, added ones stay
        eventually(lambda: seconds(get_pod(env, p_changed)) == {NOT_READY: 300, UNREACHABLE: 300}, "restored")
        restored = get_pod(env, p_changed)
        assert restored["spec"]["tolerations"] == [extra, *default_tolerations(300)]
        added = get_pod(env, p_added)
        assert seconds(added) == {NOT_READY: 600, UNREACHABLE: 600}
        assert record(added) == {"tolerations": [], "added": [NOT_READY, UNREACHABLE]}

        # the pod on the other node was never written
        assert get_pod(env, p_other)["metadata"]["resourceVersion"] == other_rv
        assert record(get_pod(env, p_other)) is None
    finally:
        for p in (p_changed, p_added, p_other):
            env.dc.request("DELETE", f"{PODS}/{p}")
        for n in (auto, other):
            delete_node(env, n)


def test_forever_and_edgenode_column(np_env: NPEnv) -> None:
    env = np_env
    node, pod = uid("au-f"), uid("au-fp")
    try:
        make_node(env, node, "127.0.4.3", {"openyurt.io/is-edge-worker": "true"})
        make_pod(env, pod, node, default_tolerations(300)[:1])  # only not-ready present
        annotate(env, node, "0")
        eventually(lambda: seconds(get_pod(env, pod)) == {NOT_READY: "forever", UNREACHABLE: "forever"}, "0")
        assert record(get_pod(env, pod)) == {
            "tolerations": default_tolerations(300)[:1],
            "added": [UNREACHABLE],
        }

        def shown() -> Any:
            code, obj = env.agg.get(f"{EN}/{node}")
            return code == 200 and obj["status"].get("autonomyDuration") == "0"

        eventually(shown, "edgenode shows autonomy")
    finally:
        env.dc.request("DELETE", f"{PODS}/{pod}")
        delete_node(env, node)


def test_pool_annotation_through_nodepool_controller(np_env: NPEnv) -> None:
    env = np_env
    pool, node, pod = uid("au-pool"), uid("au-pn"), uid("au-pp")
    code, out = env.agg.request("POST", NP, nodepool(pool, annotations={AUTONOMY: "7m"}))
    assert code == 201, out
    try:
        make_node(env, node, "127.0.4.4", {POOL_LABEL: pool})
        make_pod(env, pod, node, default_tolerations(300))
        eventually(lambda: seconds(get_pod(env, pod)) == {NOT_READY: 420, UNREACHABLE: 420}, "pool autonomy")

        code, out = env.agg.request("PATCH", f"{NP}/{pool}", {"spec": {"annotations": None}}, headers=MERGE)
        assert code == 200, out
        eventually(lambda: seconds(get_pod(env, pod)) == {NOT_READY: 300, UNREACHABLE: 300}, "pool removed")
    finally:
        env.dc.request("DELETE", f"{PODS}/{pod}")
        delete_node(env, node)
        env.agg.request("DELETE", f"{NP}/{pool}")
