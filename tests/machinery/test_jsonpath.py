"""The JSONPath subset used for printer columns and field extraction."""

from __future__ import annotations

from typing import Any

import pytest

from aggapi.machinery.jsonpath import evaluate, parse

OBJ: dict[str, Any] = {
    "metadata": {
        "name": "pool-a",
        "labels": {"app.kubernetes.io/name": "edge", "tier": "fe"},
        "annotations": {"a.b/c": "x"},
    },
    "spec": {"type": "Edge", "replicas": 0, "hostNetwork": False, "taints": [], "selector": None},
    "status": {
        "readyNodeNum": 3,
        "nodes": ["n1", "n2", "n3"],
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "Degraded", "status": "False", "reason": "Fine"},
        ],
    },
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (".metadata.name", "pool-a"),
        ("{.metadata.name}", "pool-a"),
        ("{ .metadata.name }", "pool-a"),
        ("$.metadata.name", "pool-a"),
        ("{$.metadata.name}", "pool-a"),
        ("metadata.name", "pool-a"),  # kubectl's relaxed form
        (".spec.type", "Edge"),
        (".spec.replicas", 0),
        (".spec.hostNetwork", False),
        (".spec.taints", []),
        (".status.readyNodeNum", 3),
        (".status.nodes[0]", "n1"),
        (".status.nodes[2]", "n3"),
        (".status.nodes[-1]", "n3"),
        (".status.conditions[0].type", "Ready"),
        (".status.conditions[1].reason", "Fine"),
        (r".metadata.labels.app\.kubernetes\.io/name", "edge"),
        (".metadata.labels['app.kubernetes.io/name']", "edge"),
        ('.metadata.labels["app.kubernetes.io/name"]', "edge"),
        (r"{.metadata.annotations.a\.b/c}", "x"),
        (".metadata", OBJ["metadata"]),
        ("", OBJ),
        ("{}", OBJ),
    ],
)
def test_single_values(path: str, value: Any) -> None:
    assert evaluate(OBJ, path) == value


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (".status.conditions[*].type", ["Ready", "Degraded"]),
        ("{.status.conditions[*].status}", ["True", "False"]),
        (".status.conditions[*].reason", ["Fine"]),  # elements lacking the field are skipped
        (".status.nodes[*]", ["n1", "n2", "n3"]),
        (".status.nodes[0:2]", ["n1", "n2"]),
        (".status.nodes[1:]", ["n2", "n3"]),
        (".metadata.labels.*", ["edge", "fe"]),
        (".metadata.labels[*]", ["edge", "fe"]),
    ],
)
def test_wildcards_return_lists(path: str, value: Any) -> None:
    assert evaluate(OBJ, path) == value


@pytest.mark.parametrize(
    "path",
    [
        ".metadata.namespace",
        ".spec.missing.deeper",
        ".status.nodes[3]",
        ".status.nodes[-4]",
        ".spec.type[0]",
        ".status.nodes.name",
        ".spec.selector",  # present but null reads the same as missing
        ".spec.taints[*].key",
        ".status.conditions[*].missing",
        r".metadata.labels.app.kubernetes.io/name",  # unescaped dots walk into missing fields
    ],
)
def test_missing_is_none(path: str) -> None:
    assert evaluate(OBJ, path) is None


def test_evaluate_on_non_objects() -> None:
    assert evaluate(None, ".a") is None
    assert evaluate([{"a": 1}], "[0].a") == 1
    assert evaluate("str", ".a") is None


@pytest.mark.parametrize("path", [".a[", ".a[x]", "..a", ".a..b", ".a b", "{.a", ".a[1:2:3]"])
def test_bad_syntax_raises(path: str) -> None:
    with pytest.raises(ValueError):
        parse(path)
