"""The service topology trigger: make kube-proxy and coredns re-read a Service's endpoints when only its
topology scope changed.

The edge shadow-apiserver's `servicetopology` filter keeps only the endpoints of a Service that are in
the client node's host / NodePool / zone (docs/shadow-filters.md). It filters EndpointSlices and
Endpoints as they are sent, so a change that does not touch them — the Service's
`openyurt.io/topologyKeys` annotation, a node's pool or zone label, a NodePool's members — would reach
kube-proxy only with the slice's next change. Like OpenYurt's yurt-manager (servicetopology controllers),
this controller then "touches" the Service's EndpointSlices (label `kubernetes.io/service-name`) and its
Endpoints: a merge patch of the annotation `openyurt.io/update-trigger`, so every watcher gets a MODIFIED
event and the shadow filters the object again with the new scope.

Triggers: a Service whose annotation was added, changed or removed → that Service; a NodePool created,
deleted or whose `status.nodes` changed (aggapi's own Store), or a Node whose pool or zone label changed
(the shared Node informer) → every Service that has the annotation. Keys are "namespace/name" of
Services, debounced: events within `debounce` seconds of the first give one touch, made after the
NodePool status has usually caught up with the node labels. It runs on the elected leader only; a
change made while no replica leads is not replayed (the next endpoint change brings it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aggapi.apis.nodepool import NODEPOOL
from aggapi.controllers import nodes as n
from aggapi.controllers.controller import Controller, Requeue, patch_or_requeue
from aggapi.controllers.informer import EventHandler, Informer, InformerConfig, Obj, object_key
from aggapi.controllers.kube import KubeListWatcher, ListWatchConfig
from aggapi.controllers.kubejson import KubeUnavailable, kube_request
from aggapi.controllers.nodepool import Observer
from aggapi.controllers.storelw import StoreListWatcher
from aggapi.controllers.workqueue import WorkQueue
from aggapi.registry.store import Store

log = logging.getLogger(__name__)

TOPOLOGY_KEYS = "openyurt.io/topologyKeys"
UPDATE_TRIGGER = "openyurt.io/update-trigger"  # OpenYurt's key: existing tooling looks for it
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")


@dataclass(frozen=True, slots=True)
class ServiceTopologyConfig:
    workers: int = 2
    request_timeout: float = 10.0
    debounce: float = 1.0  # seconds from a Service's first event to its touch


def topology_keys(svc: Obj) -> str | None:
    value = ((svc.get("metadata") or {}).get("annotations") or {}).get(TOPOLOGY_KEYS)
    return None if value is None else str(value)


def slim_service(svc: Obj) -> Obj:
    """What the trigger keeps of a Service (an informer transform): its name and the annotation."""
    meta = svc.get("metadata") or {}
    keep = {k: meta[k] for k in ("name", "namespace", "resourceVersion") if k in meta}
    keys = topology_keys(svc)
    if keys is not None:
        keep["annotations"] = {TOPOLOGY_KEYS: keys}
    return {"metadata": keep}


def trigger_value(now: datetime) -> str:
    """RFC 3339 with microseconds: two touches never carry the same value (an unchanged value would make
    the patch a no-op, and no watcher would hear of it)."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _placement(node: Obj) -> tuple[str, ...]:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return (n.pool_of(node), *(str(labels.get(k, "")) for k in ZONE_LABELS))


def _members(pool: Obj) -> set[str]:
    return {str(x) for x in (pool.get("status") or {}).get("nodes") or []}


class ServiceTopologyTrigger:
    def __init__(
        self,
        api: Any,
        nodes: Informer,
        *,
        config: ServiceTopologyConfig | None = None,
        observer: Observer | None = None,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self.config = config or ServiceTopologyConfig()
        self._observer = observer
        self._wall = wall
        self._store: Store | None = None
        self._services: Informer | None = None
        self._queue: WorkQueue | None = None
        self._pending: set[str] = set()  # keys waiting out their debounce
        self.touches = 0  # objects patched (tests, logs)
        nodes.add_handler(EventHandler(on_update=self._node_updated))

    def bind(self, stores: Mapping[str, Store]) -> None:
        """Extensions.store_users: take the NodePool Store once the server has made it."""
        self._store = stores[NODEPOOL.resource]

    # ---- events → keys ------------------------------------------------------------------------------

    def _add(self, key: str) -> None:
        if self._queue is None or key in self._pending:  # not leading (or not synced), or already due
            return
        self._pending.add(key)
        self._queue.add_after(key, self.config.debounce)

    def _add_all(self, why: str) -> None:
        if self._queue is None or self._services is None:
            return
        keys = [object_key(s) for s in self._services.items() if topology_keys(s) is not None]
        if keys:
            log.info("%s: touching the endpoints of %d topology-keyed services", why, len(keys))
        for key in keys:
            self._add(key)

    def _service_updated(self, old: Obj, new: Obj) -> None:
        if topology_keys(old) != topology_keys(new):
            self._add(object_key(new))

    def _node_updated(self, old: Obj, new: Obj) -> None:
        if _placement(old) != _placement(new):
            self._add_all(f"node {object_key(new)} changed pool or zone")

    def _pool_handler(self) -> EventHandler:
        def changed(old: Obj, new: Obj) -> None:
            if _members(old) != _members(new):
                self._add_all(f"nodepool {object_key(new)} changed members")

        return EventHandler(
            on_add=lambda p: self._add_all(f"nodepool {object_key(p)} created"),
            on_update=changed,
            on_delete=lambda p: self._add_all(f"nodepool {object_key(p)} deleted"),
        )

    # ---- leading ------------------------------------------------------------------------------------

    async def lead(self) -> None:
        """Run the Service and NodePool informers and the workers until cancelled (only while leading)."""
        if self._store is None:
            raise RuntimeError("the NodePool store was never bound")
        services = Informer(
            KubeListWatcher(self._api, ListWatchConfig("/api/v1/services")),
            InformerConfig("st-services"),
            transform=slim_service,
        )
        services.add_handler(EventHandler(on_update=self._service_updated))
        pools = Informer(StoreListWatcher(self._store), InformerConfig("st-nodepools"))
        pools.add_handler(self._pool_handler())
        queue = WorkQueue("servicetopology", observer=self._observer)
        ctl = Controller(
            "servicetopology", queue, self.reconcile, workers=self.config.workers, observer=self._observer
        )
        self._services = services
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(services.run(), name="servicetopology-informer-services")
                tg.create_task(pools.run(), name="servicetopology-informer-nodepools")
                await services.wait_synced()
                await pools.wait_synced()
                self._queue = queue  # from here on events are changes, not the first list
                tg.create_task(ctl.run(), name="servicetopology-workers")
        finally:
            queue.shutdown()
            self._services = self._queue = None
            self._pending.clear()

    async def reconcile(self, key: str) -> None:
        self._pending.discard(key)  # an event from now on needs a touch after this one
        ns, _, name = key.partition("/")
        if not ns or not name:
            return
        timeout = self.config.request_timeout
        try:
            ans = await kube_request(
                self._api,
                "GET",
                f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                query=[("labelSelector", f"{SERVICE_NAME_LABEL}={name}")],
                timeout=timeout,
            )
        except KubeUnavailable as exc:
            raise Requeue(str(exc)) from exc
        if not ans.ok:
            raise RuntimeError(f"listing the endpointslices of service {key}: {ans.status} {ans.message}")
        slices = sorted(
            str((s.get("metadata") or {}).get("name", ""))
            for s in ans.body.get("items") or []
            if isinstance(s, dict)
        )
        patch = {"metadata": {"annotations": {UPDATE_TRIGGER: trigger_value(self._wall())}}}
        targets = [
            (
                f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/{quote(s)}",
                f"endpointslice {ns}/{s}",
            )
            for s in slices
            if s
        ]
        targets.append((f"/api/v1/namespaces/{ns}/endpoints/{quote(name)}", f"endpoints {key}"))
        touched = 0
        for path, what in targets:
            if await patch_or_requeue(self._api, path, patch, what, timeout=timeout):
                touched += 1
        self.touches += touched
        log.info("service %s: touched %d endpoint object(s) for its topology", key, touched)
