"""The UnitedDeployment controller: one Deployment or StatefulSet per target NodePool in kube-apiserver.

It runs on the elected leader next to the NodePool controller. Informers: UnitedDeployments and
NodePools from aggapi's own Store; Deployments and StatefulSets in kube-apiserver, only those labelled
`apps.openyurt.io/pool-name` (what this controller creates), indexed by their controlling
UnitedDeployment. Keys are "namespace/name" of UnitedDeployments; what a reconcile does is computed by
uniteddeployment_plan.py and the status by uniteddeployment_status.py.

Writes carry the resourceVersion of the cached copy (PUT, merge patch) or the uid (DELETE preconditions),
so a workload that changed meanwhile answers 409 and the key is retried once the informer has it. A
UnitedDeployment that is gone or has a deletionTimestamp is left alone: its workloads belong to kube's
garbage collector (their ownerReferences), never to this controller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aggapi.apis.nodepool import NODEPOOL
from aggapi.apis.uniteddeployment import UNITEDDEPLOYMENT
from aggapi.apis.uniteddeployment_render import POOL_NAME_LABEL, RESOURCES, UD_LABEL, Pool, template_of
from aggapi.controllers.controller import Controller, Requeue, patch_or_requeue, same_status
from aggapi.controllers.informer import EventHandler, Informer, InformerConfig, Obj
from aggapi.controllers.kube import KubeListWatcher, ListWatchConfig
from aggapi.controllers.kubejson import KubeUnavailable, kube_request
from aggapi.controllers.nodepool import Observer
from aggapi.controllers.storelw import StoreListWatcher
from aggapi.controllers.uniteddeployment_plan import Action, Plan, controller_ref, is_ud_ref, meta, plan
from aggapi.controllers.uniteddeployment_status import desired_status
from aggapi.controllers.workqueue import WorkQueue
from aggapi.machinery import apierrors
from aggapi.machinery.timefmt import format_rfc3339
from aggapi.registry.store import Store

log = logging.getLogger(__name__)

OWNER_INDEX = "owner"  # "namespace/name" of the controlling UnitedDeployment
NAMESPACE_INDEX = "namespace"


@dataclass(frozen=True, slots=True)
class UnitedDeploymentConfig:
    workers: int = 4
    request_timeout: float = 10.0
    # A workload with our name that is not ours and not labelled like ours is invisible to the informers:
    # look again this often to notice it went away.
    conflict_recheck: float = 30.0


def _key(ns: str, name: str) -> str:
    return f"{ns}/{name}"


def owner_index(obj: Obj) -> list[str]:
    ref = controller_ref(obj)
    if ref is None or not is_ud_ref(ref):
        return []
    return [_key(str(meta(obj).get("namespace", "")), str(ref.get("name", "")))]


def namespace_index(obj: Obj) -> list[str]:
    return [str(meta(obj).get("namespace", ""))]


def slim_workload(obj: Obj, kind: str) -> Obj:
    """What the controller needs of a workload: its kind (list items from kube-apiserver carry none),
    its metadata (a PUT must carry finalizers and other owners on), spec.replicas and status; not the
    pod template."""
    m = {k: v for k, v in meta(obj).items() if k != "managedFields"}
    return {
        "kind": kind,
        "metadata": m,
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas")},
        "status": obj.get("status") or {},
    }


class _Unchanged(Exception):
    """The status is already current."""


class UnitedDeploymentController:
    def __init__(
        self,
        api: Any,
        *,
        config: UnitedDeploymentConfig | None = None,
        observer: Observer | None = None,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self.config = config or UnitedDeploymentConfig()
        self._observer = observer
        self._wall = wall
        self._stores: Mapping[str, Store] = {}
        self._uds: Informer | None = None
        self._pools: Informer | None = None
        self._workloads: dict[str, Informer] = {}  # by kind
        self._queue: WorkQueue | None = None
        self.writes = 0  # workload writes sent (tests, logs)

    def bind(self, stores: Mapping[str, Store]) -> None:
        """Extensions.store_users: aggapi's own Stores, once the server has made them."""
        self._stores = stores

    def _store(self, resource: str) -> Store:
        if resource not in self._stores:
            raise RuntimeError(f"the {resource} store was never bound")
        return self._stores[resource]

    # ---- events → keys ------------------------------------------------------------------------------

    def _add(self, key: str) -> None:
        if self._queue is not None and key:
            self._queue.add(key)

    def _ud_event(self, ud: Obj) -> None:
        self._add(_key(str(meta(ud).get("namespace", "")), str(meta(ud).get("name", ""))))

    def _pool_event(self, old: Obj | None, new: Obj) -> None:
        def shape(p: Obj | None) -> Any:
            return None if p is None else (meta(p).get("labels"), (p.get("spec") or {}).get("taints"))

        if old is not None and shape(old) == shape(new):
            return  # status (ready counts) changed: nothing a workload depends on
        name = str(meta(new).get("name", ""))
        for ud in self._uds.items() if self._uds is not None else []:
            spec = ud.get("spec") or {}
            tweaks = [t for t in spec.get("workloadTweaks") or [] if isinstance(t, dict)]
            if (
                name in (spec.get("pools") or [])
                or spec.get("nodepoolSelector") is not None
                or any(
                    name in (t.get("pools") or []) or t.get("nodepoolSelector") is not None for t in tweaks
                )
            ):
                self._ud_event(ud)

    def _workload_event(self, w: Obj) -> None:
        for key in owner_index(w):
            self._add(key)
        label = (meta(w).get("labels") or {}).get(UD_LABEL)
        if label:  # a workload in our way that is not ours: tell the UnitedDeployment that wants the name
            self._add(_key(str(meta(w).get("namespace", "")), str(label)))

    # ---- leading ------------------------------------------------------------------------------------

    def _workload_informer(self, kind: str) -> Informer:
        lw = KubeListWatcher(
            self._api, ListWatchConfig(f"/apis/apps/v1/{RESOURCES[kind]}", label_selector=POOL_NAME_LABEL)
        )
        inf = Informer(
            lw,
            InformerConfig(f"ud-{RESOURCES[kind]}"),
            indexers={OWNER_INDEX: owner_index, NAMESPACE_INDEX: namespace_index},
            transform=lambda obj: slim_workload(obj, kind),
        )
        inf.add_handler(
            EventHandler(
                on_add=self._workload_event,
                on_update=lambda _old, new: self._workload_event(new),
                on_delete=self._workload_event,
            )
        )
        return inf

    async def lead(self) -> None:
        """Run the informers and the workers until cancelled (only while this replica leads)."""
        uds = Informer(
            StoreListWatcher(self._store(UNITEDDEPLOYMENT.resource)), InformerConfig("uniteddeployments")
        )
        uds.add_handler(EventHandler(on_add=self._ud_event, on_update=lambda _o, n: self._ud_event(n)))
        pools = Informer(StoreListWatcher(self._store(NODEPOOL.resource)), InformerConfig("ud-nodepools"))
        pools.add_handler(
            EventHandler(
                on_add=lambda p: self._pool_event(None, p),
                on_update=self._pool_event,
                on_delete=lambda p: self._pool_event(None, p),
            )
        )
        workloads = {kind: self._workload_informer(kind) for kind in RESOURCES}
        queue = WorkQueue("uniteddeployment", observer=self._observer)
        ctl = Controller(
            "uniteddeployment", queue, self.reconcile, workers=self.config.workers, observer=self._observer
        )
        self._uds, self._pools, self._workloads, self._queue = uds, pools, workloads, queue
        try:
            async with asyncio.TaskGroup() as tg:
                for name, inf in (("uds", uds), ("pools", pools), *workloads.items()):
                    tg.create_task(inf.run(), name=f"uniteddeployment-informer-{name}")
                for inf in (uds, pools, *workloads.values()):
                    await inf.wait_synced()
                for ud in uds.items():  # a new leader checks every UnitedDeployment once
                    self._ud_event(ud)
                tg.create_task(ctl.run(), name="uniteddeployment-workers")
        finally:
            queue.shutdown()
            self._uds = self._pools = self._queue = None
            self._workloads = {}

    # ---- reconcile ----------------------------------------------------------------------------------

    def _plan(self, ud: Obj) -> Plan:
        assert self._pools is not None
        ns, name = str(meta(ud).get("namespace", "")), str(meta(ud).get("name", ""))
        kind = template_of(ud.get("spec") or {})[0]
        inf = self._workloads.get(kind)
        in_ns = inf.by_index(NAMESPACE_INDEX, ns) if inf is not None else []
        by_name = {str(meta(w).get("name")): w for w in in_ns}
        uid = meta(ud).get("uid")
        owned = [
            w
            for i in self._workloads.values()
            for w in i.by_index(OWNER_INDEX, _key(ns, name))
            if (controller_ref(w) or {}).get("uid") == uid
        ]
        pools = [Pool.of(p) for p in self._pools.items()]
        return plan(ud, pools, by_name, owned)

    async def reconcile(self, key: str) -> None:
        if self._uds is None:
            return
        ud = self._uds.get(key)
        if ud is None or meta(ud).get("deletionTimestamp"):
            return  # its workloads are the garbage collector's now
        p = self._plan(ud)
        retry: Requeue | None = None
        for action in p.actions:
            try:
                await self._act(ud, p.kind, action, p)
            except Requeue as exc:
                retry = retry or exc
        await self._write_status(ud, p)
        if retry is not None:
            raise retry

    def _path(self, ns: str, kind: str, name: str = "") -> str:
        return f"/apis/apps/v1/namespaces/{ns}/{RESOURCES[kind]}" + (f"/{name}" if name else "")

    async def _act(self, ud: Obj, kind: str, a: Action, p: Plan) -> None:
        ns, timeout = str(meta(ud).get("namespace", "")), self.config.request_timeout
        what = f"{kind} {ns}/{a.name}"
        if a.verb == "delete":
            kind = next((k for k, i in self._workloads.items() if i.get(_key(ns, a.name)) is not None), kind)
            body = {"propagationPolicy": "Background", "preconditions": {"uid": a.uid}}
            ans = await self._request("DELETE", self._path(ns, kind, a.name), body, timeout)
            if ans.ok or ans.status in (404, 409):  # gone, or a new object by that name: not ours
                log.info(
                    "uniteddeployment %s/%s: deleted %s %s (pool %s)",
                    ns,
                    meta(ud).get("name"),
                    kind,
                    a.name,
                    a.pool,
                )
                self.writes += 1
                return
            raise RuntimeError(f"deleting {what}: {ans.status} {ans.message}")
        if a.verb == "scale":
            patch = {"metadata": {"resourceVersion": a.resource_version}, **(a.body or {})}
            if await patch_or_requeue(self._api, self._path(ns, kind, a.name), patch, what, timeout=timeout):
                self.writes += 1
            return
        if a.verb == "create":
            ans = await self._request("POST", self._path(ns, kind), a.body, timeout)
        else:
            ans = await self._request("PUT", self._path(ns, kind, a.name), a.body, timeout)
        if ans.ok:
            self.writes += 1
            log.info(
                "uniteddeployment %s/%s: %sd %s (pool %s)", ns, meta(ud).get("name"), a.verb, what, a.pool
            )
            return
        if ans.status == 409 and a.verb == "create":
            await self._name_taken(ud, kind, a, p)
        if ans.status in (404, 409, 429) or ans.status >= 500:
            raise Requeue(f"{a.verb} {what}: {ans.status} {ans.message}")
        self._problem(p, a.pool, f"WriteFailed: {a.verb} {what}: {ans.status} {ans.message}")
        if ans.status == 403:  # RBAC, or admission not finding our kind yet (aggregation down): back off
            raise Requeue(f"{a.verb} {what}: {ans.status} {ans.message}")
        # Invalid: reported in status, retried when the UnitedDeployment or a pool changes.

    async def _name_taken(self, ud: Obj, kind: str, a: Action, p: Plan) -> None:
        """POST answered AlreadyExists: the object is not in the cache. Ours (the cache lags) → requeue;
        someone else's → report it and look again later."""
        ns = str(meta(ud).get("namespace", ""))
        ans = await self._request("GET", self._path(ns, kind, a.name), None, self.config.request_timeout)
        ref = controller_ref(ans.body) if ans.ok else None
        if ans.ok and not (ref is not None and is_ud_ref(ref) and ref.get("uid") == meta(ud).get("uid")):
            who = f"{ref.get('kind')} {ref.get('name')}" if ref else "nobody (not labelled as ours)"
            self._problem(p, a.pool, f"WorkloadConflict: {kind} {a.name} exists, controlled by {who}")
            raise Requeue(f"{kind} {ns}/{a.name} exists and is not ours", after=self.config.conflict_recheck)

    @staticmethod
    def _problem(p: Plan, pool: str, message: str) -> None:
        for v in p.views:
            if v.pool == pool:
                v.problem = message

    async def _request(self, method: str, path: str, body: Any, timeout: float) -> Any:
        try:
            return await kube_request(self._api, method, path, body, timeout=timeout)
        except KubeUnavailable as exc:
            raise Requeue(str(exc)) from exc

    async def _write_status(self, ud: Obj, p: Plan) -> None:
        ns, name, uid = str(meta(ud).get("namespace", "")), str(meta(ud).get("name", "")), meta(ud).get("uid")
        now, gen = format_rfc3339(self._wall()), meta(ud).get("generation")

        async def with_status(current: Obj) -> Obj:
            cm = meta(current)
            # Another spec since the plan was made (its own reconcile is queued), or being deleted: skip.
            if cm.get("uid") != uid or cm.get("generation") != gen or cm.get("deletionTimestamp"):
                raise _Unchanged
            status = desired_status(ud, p, now, current.get("status") or {})
            if same_status(current.get("status"), status):
                raise _Unchanged
            current["status"] = status
            return current

        try:
            await self._store(UNITEDDEPLOYMENT.resource).update(ns, name, with_status, subresource="status")
        except _Unchanged:
            return
        except apierrors.StatusError as exc:
            if exc.code == 404:
                return
            raise
