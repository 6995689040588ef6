"""The pure parts of UnitedDeployments: rendering a pool's workload, the plan of one reconcile (create,
adopt, pool-by-pool update, scale, delete, conflicts) and the status computed from it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from aggapi.apis.uniteddeployment import UNITEDDEPLOYMENT
from aggapi.apis.uniteddeployment_render import REVISION_LABEL, Pool, RenderError, render, update_revision
from aggapi.controllers.controller import same_status
from aggapi.controllers.uniteddeployment_plan import owner_ref, plan, rolled_out
from aggapi.controllers.uniteddeployment_status import desired_status
from aggapi.registry.schema import with_schema_errors

UID = "u-1"


def ud(**spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": "web", "namespace": "ns", "uid": UID, "generation": 1},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "workloadTemplate": {
                "deploymentTemplate": {
                    "spec": {
                        "replicas": 2,
                        "template": {
                            "metadata": {"labels": {"app": "web"}},
                            "spec": {"containers": [{"name": "c", "image": "img:1"}]},
                        },
                    }
                }
            },
            "revisionHistoryLimit": 10,
            **spec,
        },
    }
    return obj


POOLS = [Pool("a", {"t": "x"}), Pool("b", {"t": "x"}), Pool("c", {"t": "y"})]


def existing(u: dict[str, Any], pool: str, *, done: bool = True, **meta: Any) -> dict[str, Any]:
    r = render(u, next(p for p in POOLS if p.name == pool))
    w = copy.deepcopy(r.obj)
    w["metadata"].update(
        {"ownerReferences": [owner_ref(u)], "resourceVersion": "7", "uid": f"w-{pool}", "generation": 1}
    )
    w["metadata"].update(meta)
    n = r.replicas
    w["status"] = (
        {
            "observedGeneration": 1,
            "replicas": n,
            "updatedReplicas": n,
            "availableReplicas": n,
            "readyReplicas": n,
        }
        if done
        else {}
    )
    return w


def test_render_order_and_invariants() -> None:
    u = ud(
        workloadTweaks=[
            {"pools": ["a"], "replicas": 5, "containerImages": [{"name": "c", "image": "img:2"}]},
            {"nodepoolSelector": {"matchLabels": {"t": "x"}}, "replicas": 3},
            # A patch cannot take the workload out of its pool: the controller's fields are set last.
            {"pools": ["a"], "patches": [{"op": "add", "path": "/spec/selector", "value": {}}]},
        ]
    )
    a = render(u, Pool("a", {"t": "x"}, ({"key": "k", "effect": "NoExecute"},)))
    assert a.replicas == 3  # the later tweak wins
    assert a.obj["spec"]["template"]["spec"]["containers"][0]["image"] == "img:2"
    assert a.obj["spec"]["selector"] == {"matchLabels": {"app": "web", "apps.openyurt.io/pool-name": "a"}}
    assert a.obj["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "k", "effect": "NoExecute", "operator": "Exists"}
    ]
    assert a.name == "web-a" and a.obj["metadata"]["labels"][REVISION_LABEL] == a.revision
    # Replicas are not part of the revision; the image is.
    scaled = render(ud(workloadTweaks=[{"pools": ["a"], "replicas": 9}]), POOLS[0])
    assert scaled.revision == render(ud(), POOLS[0]).revision
    assert (
        render(
            ud(workloadTweaks=[{"pools": ["a"], "containerImages": [{"name": "c", "image": "i"}]}]), POOLS[0]
        ).revision
        != scaled.revision
    )
    with pytest.raises(RenderError, match=r"workloadTweaks\[0\]\.patches"):
        render(
            ud(workloadTweaks=[{"pools": ["a"], "patches": [{"op": "remove", "path": "/nope"}]}]), POOLS[0]
        )


def test_plan_creates_then_rolls_one_pool_at_a_time() -> None:
    u = ud(nodepoolSelector={"matchLabels": {"t": "x"}}, pools=["c", "gone"])
    p = plan(u, POOLS, {}, [])
    assert [(a.verb, a.name) for a in p.actions] == [
        ("create", "web-a"),
        ("create", "web-b"),
        ("create", "web-c"),
    ]
    assert p.missing == ["gone"]
    assert p.actions[0].body is not None and p.actions[0].body["metadata"]["ownerReferences"] == [
        owner_ref(u)
    ]

    ws = {f"web-{x}": existing(u, x) for x in "abc"}
    assert plan(u, POOLS, ws, ws.values()).actions == []
    new = copy.deepcopy(u)
    new["spec"]["workloadTemplate"]["deploymentTemplate"]["spec"]["template"]["spec"]["containers"][0][
        "image"
    ] = "img:2"
    p = plan(new, POOLS, ws, ws.values())
    assert [(a.verb, a.name) for a in p.actions] == [("update", "web-a")]
    assert p.rolling == ["a"] and p.waiting == ["b", "c"]
    assert p.actions[0].resource_version == "7"

    # a now on the new revision but not rolled out: nothing else moves.
    ws["web-a"] = existing(new, "a", done=False)
    p = plan(new, POOLS, ws, ws.values())
    assert p.actions == [] and p.rolling == ["a"]
    st = desired_status(new, p, "t")
    cond = {c["type"]: c for c in st["conditions"]}
    assert cond["AppUpdated"]["reason"] == "RollingOut" and "pool a" in cond["AppUpdated"]["message"]
    assert "currentRevision" not in st and st["updateRevision"] == update_revision(new["spec"])

    ws["web-a"] = existing(new, "a")
    p = plan(new, POOLS, ws, ws.values())
    assert [(a.verb, a.name) for a in p.actions] == [("update", "web-b")]


def test_an_unavailable_pool_with_nothing_to_replace_holds_nobody() -> None:
    u = ud(pools=["a", "b", "c"])
    ws = {f"web-{x}": existing(u, x) for x in "abc"}
    # Pool c's nodes are offline: its pods are on the current spec, none available.
    ws["web-c"]["status"].update(availableReplicas=0, readyReplicas=0)
    # Only pool a's tweak changes: its update must not wait for c.
    new = ud(
        pools=["a", "b", "c"],
        workloadTweaks=[{"pools": ["a"], "containerImages": [{"name": "c", "image": "img:2"}]}],
    )
    p = plan(new, POOLS, ws, ws.values())
    assert [(a.verb, a.name) for a in p.actions] == [("update", "web-a")] and p.waiting == []
    # But a pool stuck mid-update (old pods left: its new pods never became available) holds the rest.
    ws["web-a"] = existing(new, "a")
    ws["web-a"]["status"].update(replicas=3, updatedReplicas=1, availableReplicas=2)
    newer = ud(
        pools=["a", "b", "c"],
        workloadTweaks=[
            {"pools": ["a"], "containerImages": [{"name": "c", "image": "img:2"}]},
            {"pools": ["b"], "replicas": 3, "containerImages": [{"name": "c", "image": "img:3"}]},
        ],
    )
    p = plan(newer, POOLS, ws, ws.values())
    assert [a.verb for a in p.actions if a.name == "web-b"] == ["scale"] and p.waiting == ["b"]
    assert p.rolling == ["a"]


def test_plan_scales_adopts_deletes_and_reports_conflicts() -> None:
    u = ud(pools=["a", "b"], workloadTweaks=[{"pools": ["a"], "replicas": 4}])
    mine = existing(ud(pools=["a", "b"]), "a")  # replicas 2, same revision
    orphan = existing(u, "b", ownerReferences=[])
    stale = existing(u, "c")  # pool c is no longer a target
    p = plan(u, POOLS, {"web-a": mine, "web-b": orphan, "web-c": stale}, [mine, stale])
    verbs = {(a.verb, a.name) for a in p.actions}
    assert verbs == {("scale", "web-a"), ("update", "web-b"), ("delete", "web-c")}
    adopt = next(a for a in p.actions if a.verb == "update")
    assert adopt.body is not None and adopt.body["metadata"]["ownerReferences"] == [owner_ref(u)]
    delete = next(a for a in p.actions if a.verb == "delete")
    assert delete.uid == "w-c"

    theirs = existing(
        u, "a", ownerReferences=[{"kind": "Other", "name": "x", "uid": "o", "controller": True}]
    )
    p = plan(u, POOLS, {"web-a": theirs}, [])
    assert [a.name for a in p.actions] == ["web-b"]  # web-a left alone
    st = desired_status(u, p, "t")
    cond = {c["type"]: c for c in st["conditions"]}
    assert (
        cond["AppDispatched"]["reason"] == "WorkloadConflict"
        and "Other x" in cond["AppDispatched"]["message"]
    )


def test_rolled_out_follows_kubectl_rollout_status() -> None:
    w = {"kind": "Deployment", "metadata": {"generation": 2}, "status": {"observedGeneration": 1}}
    assert not rolled_out(w, 0)
    w["status"] = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}
    assert not rolled_out(w, 2)  # an old pod is still there
    w["status"].update(replicas=2)
    assert rolled_out(w, 2)
    sts = {"kind": "StatefulSet", "metadata": {"generation": 1}, "status": {
        "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
        "currentRevision": "r1", "updateRevision": "r2"}}  # fmt: skip
    assert not rolled_out(sts, 1)


def test_status_keeps_transition_times_and_compares_without_them() -> None:
    u = ud(pools=["a"])
    ws = {"web-a": existing(u, "a")}
    p = plan(u, POOLS, ws, ws.values())
    first = desired_status(u, p, "2026-01-01T00:00:00Z")
    assert first["currentRevision"] == first["updateRevision"]
    assert (first["replicas"], first["readyReplicas"], first["updatedReplicas"]) == (2, 2, 2)
    again = desired_status({**u, "status": first}, p, "2026-01-02T00:00:00Z")
    assert again == first and same_status(first, again)
    assert with_schema_errors({"status": first}, UNITEDDEPLOYMENT.schema, []) == []


def test_a_pool_whose_tweaks_fail_keeps_its_workload() -> None:
    good = ud(pools=["a"])
    w = existing(good, "a")
    bad = ud(
        pools=["a"],
        workloadTweaks=[
            {"pools": ["a"], "patches": [{"op": "remove", "path": "/spec/template/spec/containers/0"}]},
            {"pools": ["a"], "containerImages": [{"name": "c", "image": "img:2"}]},  # c is gone by now
        ],
    )
    p = plan(bad, POOLS, {"web-a": w}, [w])
    assert p.actions == []
    (view,) = p.views
    assert view.problem.startswith("RenderFailed: spec.workloadTweaks[1].containerImages[0]")
    cond = {c["type"]: c for c in desired_status(bad, p, "t")["conditions"]}
    assert cond["AppDispatched"]["reason"] == "RenderFailed"
