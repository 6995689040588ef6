"""The status a UnitedDeployment should have, from a Plan (the pools and their workloads as cached).

Conditions, each with the UnitedDeployment's generation as observedGeneration; lastTransitionTime moves
only when a condition's status changes:

- PoolFound: the named pools exist and at least one pool is a target.
- AppDispatched: every target pool has its workload, controlled by this UnitedDeployment.
- AppUpdated: every pool runs its current revision, rolled out (False while rolling pool by pool: the
  message names the pool being waited for and the pools after it).
- AppReady: every pool has as many ready replicas as it wants.
"""

from __future__ import annotations

from typing import Any

from aggapi.apis.uniteddeployment_render import REVISION_LABEL, update_revision
from aggapi.controllers.uniteddeployment_plan import Obj, Plan, PoolView, caught_up, meta, rolled_out

CONDITION_TYPES = ("PoolFound", "AppDispatched", "AppUpdated", "AppReady")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _shown(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _updated(v: PoolView) -> bool:
    r, w = v.rendered, v.workload
    return (
        r is not None
        and w is not None
        and (meta(w).get("labels") or {}).get(REVISION_LABEL) == r.revision
        and rolled_out(w, r.replicas)
    )


def pool_status(v: PoolView) -> Obj:
    r, w = v.rendered, v.workload
    st = (w or {}).get("status") or {}
    on_revision = (
        r is not None
        and w is not None
        and (meta(w).get("labels") or {}).get(REVISION_LABEL) == r.revision
        and caught_up(w)
    )
    out: Obj = {
        "name": v.pool,
        "replicas": r.replicas if r is not None else 0,
        "readyReplicas": _int(st.get("readyReplicas")),
        "availableReplicas": _int(st.get("availableReplicas")),
        "updatedReplicas": _int(st.get("updatedReplicas")) if on_revision else 0,
        "updated": _updated(v),
    }
    if r is not None and not v.problem:
        out["workload"] = r.name
    if w is not None:
        out["revision"] = str((meta(w).get("labels") or {}).get(REVISION_LABEL, ""))
    return out


def _cond(kind: str, ok: bool, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}


def _pool_found(p: Plan) -> dict[str, str]:
    names = [v.pool for v in p.views]
    if p.missing:
        return _cond("PoolFound", False, "PoolNotFound", f"NodePools not found: {_shown(p.missing)}")
    if not names:
        return _cond("PoolFound", False, "NoPoolMatched", "no NodePool is a target")
    return _cond("PoolFound", True, "PoolsFound", f"{len(names)} target pool(s): {_shown(names)}")


def _dispatched(p: Plan) -> dict[str, str]:
    problems = [f"{v.pool}: {v.problem}" for v in p.views if v.problem]
    if problems:
        reason = problems[0].partition(": ")[2].partition(":")[0]
        return _cond("AppDispatched", False, reason, "; ".join(problems[:5]))
    pending = [v.pool for v in p.views if v.workload is None]
    if pending:
        return _cond("AppDispatched", False, "Dispatching", f"creating the workloads of {_shown(pending)}")
    if not p.views:
        return _cond("AppDispatched", False, "NoPools", "no target pool")
    return _cond("AppDispatched", True, "AllDispatched", f"{len(p.views)} workload(s)")


def _rolling(p: Plan, v: PoolView) -> str:
    w, r = v.workload or {}, v.rendered
    if r is None:
        return f"pool {v.pool}"
    if (meta(w).get("labels") or {}).get(REVISION_LABEL) != r.revision:
        return f"updating pool {v.pool} ({p.kind} {r.name} to revision {r.revision})"
    st = w.get("status") or {}
    available = _int(st.get("availableReplicas" if "availableReplicas" in st else "readyReplicas"))
    return (
        f"rolling out pool {v.pool} ({p.kind} {r.name}: {_int(st.get('updatedReplicas'))}/{r.replicas} "
        f"updated, {available}/{r.replicas} available)"
    )


def _updated_cond(p: Plan) -> dict[str, str]:
    behind = [v.pool for v in p.views if not _updated(v)]
    if not behind:
        return _cond("AppUpdated", True, "RolloutComplete", "every pool runs its current revision")
    if p.rolling:
        parts = [_rolling(p, v) for v in p.views if v.pool in p.rolling]
        more = f" and {len(parts) - 3} more" if len(parts) > 3 else ""
        msg = ", ".join(parts[:3]) + more + (f"; then {_shown(p.waiting)}" if p.waiting else "")
        return _cond("AppUpdated", False, "RollingOut", msg)
    return _cond("AppUpdated", False, "NotUpdated", f"pools not on their current revision: {_shown(behind)}")


def _ready(p: Plan) -> dict[str, str]:
    short = []
    for v in p.views:
        want = v.rendered.replicas if v.rendered is not None else 0
        have = _int(((v.workload or {}).get("status") or {}).get("readyReplicas"))
        if v.workload is None or have < want:
            short.append(f"{v.pool} {have}/{want}")
    if not p.views:
        return _cond("AppReady", False, "NoPools", "no target pool")
    if short:
        return _cond("AppReady", False, "PoolsNotReady", f"ready replicas: {_shown(short)}")
    return _cond("AppReady", True, "AllReady", "every pool has its replicas ready")


def desired_status(ud: Obj, p: Plan, now: str, old: Obj | None = None) -> Obj:
    """The status of `ud` (the copy `p` was planned from); `old` is the stored status (default ud's)."""
    old = (ud.get("status") if old is None else old) or {}
    gen = _int(meta(ud).get("generation")) or 1
    pools = [pool_status(v) for v in p.views]
    revision = update_revision(ud.get("spec") or {})
    done = bool(p.views) and all(s["updated"] for s in pools)
    previous = {c.get("type"): c for c in old.get("conditions") or [] if isinstance(c, dict)}
    conditions = []
    for c in (_pool_found(p), _dispatched(p), _updated_cond(p), _ready(p)):
        prev = previous.get(c["type"]) or {}
        since = prev.get("lastTransitionTime") if prev.get("status") == c["status"] else None
        conditions.append({**c, "lastTransitionTime": since or now, "observedGeneration": gen})
    status: Obj = {
        "observedGeneration": gen,
        "replicas": sum(s["replicas"] for s in pools),
        "readyReplicas": sum(s["readyReplicas"] for s in pools),
        "updatedReplicas": sum(s["updatedReplicas"] for s in pools),
        "updateRevision": revision,
        "poolStatuses": pools,
        "conditions": conditions,
    }
    current = revision if done else old.get("currentRevision")
    if current:
        status["currentRevision"] = current
    return status
