"""What a pool pushes onto a node (merge patch + previous-attributes), and the pool status, as pure
functions."""

from __future__ import annotations

import json
from typing import Any

from aggapi.controllers.nodepool import pool_status
from aggapi.controllers.poolattrs import PREVIOUS_ATTRIBUTES, Attrs, node_patch, pool_attrs, previous_attrs


def node(
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    taints: list[dict[str, Any]] | None = None,
    ready: str = "True",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "n1",
            "resourceVersion": "7",
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {"taints": taints} if taints else {},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def pool(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": spec}


def test_first_push_sets_keys_and_records_them() -> None:
    p = pool(labels={"a": "1"}, annotations={"x": "y"}, taints=[{"key": "t", "effect": "NoSchedule"}])
    patch = node_patch(node({"keep": "me"}, taints=[{"key": "f", "effect": "NoExecute"}]), pool_attrs(p))
    assert patch is not None
    assert patch["metadata"]["resourceVersion"] == "7"  # guarded
    assert patch["metadata"]["labels"] == {"a": "1"}  # foreign label not mentioned
    ann = patch["metadata"]["annotations"]
    assert ann["x"] == "y"
    assert json.loads(ann[PREVIOUS_ATTRIBUTES]) == {
        "labels": {"a": "1"},
        "annotations": {"x": "y"},
        "taints": [{"key": "t", "effect": "NoSchedule"}],
    }
    assert patch["spec"]["taints"] == [
        {"key": "f", "effect": "NoExecute"},
        {"key": "t", "effect": "NoSchedule"},
    ]


def test_in_sync_node_needs_no_patch() -> None:
    desired = Attrs({"a": "1"}, {}, [{"key": "t", "effect": "NoSchedule"}])
    n = node({"a": "1"}, {PREVIOUS_ATTRIBUTES: desired.encode()}, [{"key": "t", "effect": "NoSchedule"}])
    assert node_patch(n, desired) is None


def test_removed_keys_removed_foreign_untouched_taints_by_key_and_effect() -> None:
    prev = Attrs({"a": "1", "b": "2"}, {"x": "y"}, [{"key": "t", "value": "v", "effect": "NoSchedule"}])
    n = node(
        {"a": "1", "b": "2", "keep": "me"},
        {"x": "y", "foreign": "1", PREVIOUS_ATTRIBUTES: prev.encode()},
        [
            {"key": "t", "value": "v", "effect": "NoSchedule"},
            {"key": "t", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"},  # foreign: other effect
        ],
    )
    desired = Attrs({"a": "3"}, {}, [{"key": "t", "value": "w", "effect": "NoExecute"}])
    patch = node_patch(n, desired)
    assert patch is not None
    assert patch["metadata"]["labels"] == {"a": "3", "b": None}
    assert patch["metadata"]["annotations"]["x"] is None
    assert "foreign" not in patch["metadata"]["annotations"]
    # The pool's NoSchedule taint is gone; the NoExecute one (same key, other effect) is now the pool's,
    # keeping its timeAdded.
    assert patch["spec"]["taints"] == [
        {"key": "t", "value": "w", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"}
    ]


def test_leaving_the_pool_removes_everything_it_gave() -> None:
    prev = Attrs({"a": "1"}, {"x": "y"}, [{"key": "t", "effect": "NoSchedule"}])
    n = node(
        {"a": "1", "keep": "me"},
        {"x": "y", PREVIOUS_ATTRIBUTES: prev.encode()},
        [{"key": "t", "effect": "NoSchedule"}, {"key": "f", "effect": "NoSchedule"}],
    )
    patch = node_patch(n, pool_attrs(None))
    assert patch is not None
    assert patch["metadata"]["labels"] == {"a": None}
    assert patch["metadata"]["annotations"] == {"x": None, PREVIOUS_ATTRIBUTES: None}
    assert patch["spec"]["taints"] == [{"key": "f", "effect": "NoSchedule"}]


def test_unreadable_previous_attributes_are_empty() -> None:
    assert previous_attrs(node(annotations={PREVIOUS_ATTRIBUTES: "{not json"})) == Attrs()


def test_pool_status_counts_and_condition_transition_time() -> None:
    members = [node(ready="True"), {**node(ready="False"), "metadata": {"name": "n2"}}]
    st = pool_status(members, None, 3, "T1")
    assert st["nodes"] == ["n1", "n2"] and st["readyNodeNum"] == 1 and st["unreadyNodeNum"] == 1
    cond = st["conditions"][0]
    assert (
        cond["status"] == "False" and cond["lastTransitionTime"] == "T1" and cond["observedGeneration"] == 3
    )
    again = pool_status(members, st, 3, "T2")
    assert again["conditions"][0]["lastTransitionTime"] == "T1"  # no transition
    fixed = pool_status(members[:1], st, 3, "T3")
    assert fixed["conditions"][0]["status"] == "True" and fixed["conditions"][0]["lastTransitionTime"] == "T3"
    empty = pool_status([], fixed, 3, "T4")
    assert empty["conditions"][0]["reason"] == "NoNodes" and empty["nodes"] == []
