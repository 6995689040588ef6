"""What one reconcile of a UnitedDeployment does, computed without I/O from the informers' state.

- Target pools without a workload get one at once (creating disrupts nothing).
- A workload whose revision label differs from what its pool should run is updated **pool by pool**
  (pools in name order): only when every workload already on its new revision has rolled out
  (`rolled_out`) does the next pool get its update. Replica changes alone are not revisions (as with
  kube's Deployments) and are applied to every pool at once.
- Workloads of this UnitedDeployment (controller ownerReference with its uid) whose pool is no longer a
  target are deleted.
- A workload with the wanted name whose controller is someone else is never touched: the pool is reported.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aggapi.apis.common import GROUP, VERSION
from aggapi.apis.uniteddeployment_render import (
    DEPLOYMENT,
    POOL_NAME_LABEL,
    REVISION_LABEL,
    Pool,
    Rendered,
    RenderError,
    render,
    targets,
    template_of,
    workload_name,
)

Obj = dict[str, Any]

API_VERSION = f"{GROUP}/{VERSION}"
KIND = "UnitedDeployment"


def meta(obj: Obj) -> Obj:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def controller_ref(obj: Obj) -> Obj | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def is_ud_ref(ref: Obj) -> bool:
    return ref.get("kind") == KIND and str(ref.get("apiVersion", "")).partition("/")[0] == GROUP


def owner_ref(ud: Obj) -> Obj:
    """Exactly what kube's garbage collector needs to find the owner and to block its deletion."""
    m = meta(ud)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": m.get("name"),
        "uid": m.get("uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def caught_up(w: Obj) -> bool:
    """The workload's controller has seen its current spec."""
    return _int((w.get("status") or {}).get("observedGeneration")) >= _int(meta(w).get("generation") or 1)


def replacing(w: Obj, replicas: int) -> bool:
    """The workload's controller is still replacing old replicas with the current spec's. Kube's own
    rollouts only replace further as new replicas become available (maxUnavailable; StatefulSets wait
    for Ready), so a bad template stays "replacing" — while a pool that is merely unavailable (its nodes
    offline) but fully on its spec is not."""
    if not caught_up(w):
        return True
    st = w.get("status") or {}
    updated = _int(st.get("updatedReplicas"))
    if updated < replicas or _int(st.get("replicas")) > updated:
        return True
    current, update = st.get("currentRevision"), st.get("updateRevision")  # StatefulSets
    return bool(current and update and current != update)


def rolled_out(w: Obj, replicas: int) -> bool:
    """`kubectl rollout status` says done: every replica of the current spec updated and available."""
    if not caught_up(w):
        return False
    st = w.get("status") or {}
    updated = _int(st.get("updatedReplicas"))
    if w.get("kind") == DEPLOYMENT or "availableReplicas" in st:
        available = _int(st.get("availableReplicas"))
    else:
        available = _int(st.get("readyReplicas"))
    if updated < replicas or available < replicas or _int(st.get("replicas")) > updated:
        return False
    current, update = st.get("currentRevision"), st.get("updateRevision")  # StatefulSets
    return not (current and update and current != update)


@dataclass(frozen=True, slots=True)
class Action:
    verb: str  # create | update | scale | delete
    pool: str
    name: str
    body: Obj | None = None
    uid: str = ""
    resource_version: str = ""


@dataclass(slots=True)
class PoolView:
    """One target pool as the reconcile sees it (for actions and status)."""

    pool: str
    rendered: Rendered | None
    workload: Obj | None  # ours (or an orphan we adopt), as cached
    problem: str = ""  # why this pool has no workload of ours: conflict, render error, refused write


@dataclass(slots=True)
class Plan:
    kind: str
    views: list[PoolView]
    actions: list[Action] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # spec.pools names that are not NodePools
    rolling: list[str] = field(default_factory=list)  # pools rolling out their revision (or updated now)
    waiting: list[str] = field(default_factory=list)  # pools whose update waits for their turn


def _update_body(r: Rendered, w: Obj, ud: Obj) -> Obj:
    """The full object for a PUT: our spec, our labels/annotations over the existing ones, our controller
    reference, and the rest of the existing metadata (finalizers, other owners) as it is."""
    body = copy.deepcopy(r.obj)
    old = {k: v for k, v in meta(w).items() if k != "managedFields"}
    ours = owner_ref(ud)
    others = [
        ref
        for ref in old.get("ownerReferences") or []
        if isinstance(ref, dict) and not ref.get("controller") and ref.get("uid") != ours["uid"]
    ]
    old["labels"] = {**(old.get("labels") or {}), **r.obj["metadata"]["labels"]}
    annotations = {**(old.get("annotations") or {}), **(r.obj["metadata"].get("annotations") or {})}
    if annotations:
        old["annotations"] = annotations
    old["ownerReferences"] = [*others, ours]
    body["metadata"] = old
    return body


def _create_body(r: Rendered, ud: Obj) -> Obj:
    body = copy.deepcopy(r.obj)
    body["metadata"]["ownerReferences"] = [owner_ref(ud)]
    return body


def plan(ud: Obj, pools: Iterable[Pool], workloads: Mapping[str, Obj], owned: Iterable[Obj]) -> Plan:
    """`workloads`: the cached objects of the template's kind by name in the UnitedDeployment's namespace;
    `owned`: every cached workload (any kind) whose controller reference is this UnitedDeployment."""
    spec, uid = ud.get("spec") or {}, str(meta(ud).get("uid", ""))
    pools = list(pools)
    known = {p.name for p in pools}
    result = Plan(template_of(spec)[0], [])
    result.missing = sorted({str(n) for n in spec.get("pools") or []} - known)
    needs_update: list[PoolView] = []
    for pool in targets(spec, pools):
        try:
            r = render(ud, pool)
        except RenderError as exc:
            result.views.append(PoolView(pool.name, None, None, f"RenderFailed: {exc}"))
            continue
        w = workloads.get(r.name)
        view = PoolView(pool.name, r, w)
        result.views.append(view)
        if w is None:
            result.actions.append(Action("create", pool.name, r.name, _create_body(r, ud)))
            continue
        ref = controller_ref(w)
        if ref is not None and not (is_ud_ref(ref) and ref.get("uid") == uid):
            who = f"{ref.get('kind')} {ref.get('name')}"
            view.workload, view.problem = None, f"WorkloadConflict: {r.kind} {r.name} is controlled by {who}"
            continue
        rv = str(meta(w).get("resourceVersion", ""))
        if ref is None:  # an orphan with our name: adopt it (as kube's controllers adopt what they select)
            result.actions.append(Action("update", pool.name, r.name, _update_body(r, w, ud), "", rv))
        elif (meta(w).get("labels") or {}).get(REVISION_LABEL) != r.revision:
            needs_update.append(view)
        elif (w.get("spec") or {}).get("replicas") != r.replicas:
            result.actions.append(
                Action("scale", pool.name, r.name, {"spec": {"replicas": r.replicas}}, "", rv)
            )
    _roll(result, needs_update, ud)
    # A pool whose tweaks fail to render keeps the workload it has: only non-targets lose theirs.
    wanted = {workload_name(str(meta(ud).get("name", "")), v.pool) for v in result.views}
    for w in owned:
        m = meta(w)
        if w.get("kind") != result.kind or str(m.get("name")) not in wanted:
            in_pool = str((m.get("labels") or {}).get(POOL_NAME_LABEL, ""))
            result.actions.append(Action("delete", in_pool, str(m.get("name")), None, str(m.get("uid", ""))))
    return result


def _roll(result: Plan, needs_update: list[PoolView], ud: Obj) -> None:
    """Start the next pool's update only when no pool already on its revision is still replacing its
    replicas (an unavailable pool with nothing left to replace does not hold the others)."""
    updating = {v.pool for v in needs_update}
    result.rolling = [
        v.pool
        for v in result.views
        if v.pool not in updating
        and v.rendered is not None
        and v.workload is not None
        and replacing(v.workload, v.rendered.replicas)
    ]
    for v in needs_update:
        assert v.rendered is not None and v.workload is not None
        r, w = v.rendered, v.workload
        rv = str(meta(w).get("resourceVersion", ""))
        if not result.rolling:
            result.rolling = [v.pool]
            result.actions.append(Action("update", v.pool, r.name, _update_body(r, w, ud), "", rv))
            continue
        result.waiting.append(v.pool)
        if (w.get("spec") or {}).get("replicas") != r.replicas:  # scaling does not wait for the rollout
            result.actions.append(Action("scale", v.pool, r.name, {"spec": {"replicas": r.replicas}}, "", rv))
