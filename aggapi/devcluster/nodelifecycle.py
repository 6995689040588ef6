"""One of the devcluster's two controllers (the other: gc.py): a minimal stand-in for
kube-controller-manager's node lifecycle controller (pkg/controller/nodelifecycle), because the lab's
pools count readiness from the Node Ready condition and only this controller turns a silent node's
Ready into Unknown.

Every --node-monitor-period, a node whose last heartbeat (its Lease `kube-node-lease/<node>` renewTime,
or its Ready condition's lastHeartbeatTime, whichever is newer) is older than
--node-monitor-grace-period gets all its conditions set to Unknown (reason NodeStatusUnknown). Taints
follow Ready as with kube's taint-based evictions: Unknown → `node.kubernetes.io/unreachable`
NoSchedule + NoExecute, False → `node.kubernetes.io/not-ready` likewise, True → neither. The kubelet
sets Ready=True again when its heartbeats resume; this loop then removes the taints. No evictions, no
zone states, no rate limits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aggapi.devcluster.stores import Stores
from aggapi.machinery import apierrors
from aggapi.machinery.timefmt import format_rfc3339, parse_rfc3339
from aggapi.registry.resource import Obj
from aggapi.storage.interface import ListOptions

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
EFFECTS = ("NoSchedule", "NoExecute")
UNKNOWN_REASON = "NodeStatusUnknown"
UNKNOWN_MESSAGE = "Kubelet stopped posting node status."


def _now() -> datetime:
    return datetime.now(UTC)


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        return None


def ready_condition(node: Obj) -> dict[str, Any] | None:
    conditions = (node.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if isinstance(c, dict) and c.get("type") == "Ready"), None)


def last_heartbeat(node: Obj, lease: Obj | None) -> datetime | None:
    """The newest sign of life: the Lease's renewTime or the Ready condition's lastHeartbeatTime
    (kube's probeTimestamp); the node's creation when it has neither."""
    times = [
        _time(((lease or {}).get("spec") or {}).get("renewTime")),
        _time((ready_condition(node) or {}).get("lastHeartbeatTime")),
    ]
    found = [t for t in times if t is not None]
    return max(found) if found else _time((node.get("metadata") or {}).get("creationTimestamp"))


def wanted_taints(node: Obj, ready: str, now: datetime) -> list[dict[str, Any]] | None:
    """The node's taints with the unreachable/not-ready ones matching `ready`; None if unchanged."""
    taints = [t for t in ((node.get("spec") or {}).get("taints") or []) if isinstance(t, dict)]
    key = {"Unknown": UNREACHABLE, "False": NOT_READY}.get(ready)
    kept = [t for t in taints if t.get("key") not in (UNREACHABLE, NOT_READY) or t.get("key") == key]
    for effect in EFFECTS if key else ():
        if not any(t.get("key") == key and t.get("effect") == effect for t in kept):
            taint: dict[str, Any] = {"key": key, "effect": effect}
            if effect == "NoExecute":
                taint["timeAdded"] = format_rfc3339(now)
            kept.append(taint)
    return None if kept == taints else kept


def mark_unknown(node: Obj, now: datetime) -> Obj:
    """Every condition not already Unknown becomes Unknown (a Ready condition is added if missing)."""
    status = node.setdefault("status", {})
    conditions = status.setdefault("conditions", [])
    if ready_condition(node) is None:
        conditions.append({"type": "Ready", "lastHeartbeatTime": None})
    t = format_rfc3339(now)
    for c in conditions:
        if isinstance(c, dict) and c.get("status") != "Unknown":
            c.update(status="Unknown", reason=UNKNOWN_REASON, message=UNKNOWN_MESSAGE, lastTransitionTime=t)
    return node


class NodeLifecycle:
    def __init__(
        self,
        stores: Stores,
        *,
        grace_period: float = 40.0,
        period: float = 5.0,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._stores = stores
        self.grace_period = grace_period
        self.period = period
        self._clock = clock

    async def reconcile(self) -> None:
        nodes = self._stores("", "nodes")
        leases = {
            str(lease["metadata"]["name"]): lease
            for lease in (
                await self._stores("coordination.k8s.io", "leases").list(LEASE_NAMESPACE, ListOptions())
            ).items
        }
        for node in (await nodes.list("", ListOptions())).items:
            name = str(node["metadata"]["name"])
            try:
                await self._reconcile_node(name, node, leases.get(name))
            except apierrors.StatusError as exc:
                if exc.code != 404:  # deleted meanwhile: nothing to do
                    log.warning("node lifecycle: node %s: %s", name, exc)

    async def _reconcile_node(self, name: str, node: Obj, lease: Obj | None) -> None:
        nodes = self._stores("", "nodes")
        now = self._clock()
        seen = last_heartbeat(node, lease)
        stale = seen is None or (now - seen).total_seconds() > self.grace_period
        ready = str((ready_condition(node) or {}).get("status", "Unknown"))
        if stale and ready != "Unknown":
            log.info("node %s: no heartbeat since %s, Ready=Unknown", name, seen)

            async def unknown(obj: Obj) -> Obj:
                return mark_unknown(obj, now)

            node = await nodes.update("", name, unknown, subresource="status")
            ready = "Unknown"
        if wanted_taints(node, ready, now) is None:
            return

        async def retaint(obj: Obj) -> Obj:
            current = str((ready_condition(obj) or {}).get("status", "Unknown"))
            taints = wanted_taints(obj, current, now)
            if taints is not None:
                spec = obj.setdefault("spec", {})
                if taints:
                    spec["taints"] = taints
                else:
                    spec.pop("taints", None)
            return obj

        await nodes.update("", name, retaint)
        log.info("node %s: Ready=%s, taints updated", name, ready)

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile()
            except (apierrors.StatusError, RuntimeError) as exc:  # storage still starting: next round
                log.warning("node lifecycle: %s", exc)
            await asyncio.sleep(self.period)
