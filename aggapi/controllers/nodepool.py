"""The NodePool controller.

Keys on one work queue: `node:<name>` pushes the node's pool's labels/annotations/taints onto it (see
poolattrs), `pool:<name>` keeps the pool's status (nodes, readyNodeNum, unreadyNodeNum, a NodesReady
condition) current. Membership is the node label `apps.openyurt.io/nodepool=<pool>`.

Nodes come from the shared Node informer on kube-apiserver (it runs on every replica: edgenodes, the
tunnel and delete admission read it). Pools are aggapi's own objects: while leading, the controller
follows them with an informer over the registry Store and writes status through the Store's status
path. Node writes are JSON merge patches carrying the resourceVersion the patch was computed from, so a
node that changed meanwhile answers 409 and the key is retried once the informer has the new version.

Only the leader runs the queue (`lead()`); `admit_delete` (refuse deleting a pool that still has nodes)
runs on every replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aggapi.apis.nodepool import NODEPOOL
from aggapi.controllers import nodes as n
from aggapi.controllers.controller import Controller, ReconcileObserver, patch_or_requeue, same_status
from aggapi.controllers.informer import EventHandler, Informer, InformerConfig, Obj
from aggapi.controllers.poolattrs import node_patch, pool_attrs
from aggapi.controllers.storelw import StoreListWatcher
from aggapi.controllers.workqueue import QueueObserver, WorkQueue
from aggapi.machinery import apierrors
from aggapi.machinery.timefmt import format_rfc3339
from aggapi.registry.store import Store

log = logging.getLogger(__name__)

CONDITION = "NodesReady"


@dataclass(frozen=True, slots=True)
class NodePoolControllerConfig:
    workers: int = 4
    request_timeout: float = 10.0
    sync_timeout: float = 5.0  # delete admission waits this long for the Node informer's first list


class Observer(QueueObserver, ReconcileObserver, Protocol):
    pass


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _pushed(node: Obj) -> tuple[Any, Any, Any]:
    meta = node.get("metadata") or {}
    return meta.get("labels"), meta.get("annotations"), (node.get("spec") or {}).get("taints")


def pool_status(members: list[Obj], old: Obj | None, generation: int, now: str) -> Obj:
    """The status a pool with `members` should have; the condition keeps its lastTransitionTime while
    its status stays the same."""
    names = sorted(_name(m) for m in members)
    not_ready = sorted(_name(m) for m in members if n.ready_status(m) != "True")
    if not members:
        cond = {"status": "False", "reason": "NoNodes", "message": "the pool has no nodes"}
    elif not_ready:
        shown = ", ".join(not_ready[:5]) + (", ..." if len(not_ready) > 5 else "")
        cond = {
            "status": "False",
            "reason": "NodesNotReady",
            "message": f"{len(not_ready)} of {len(names)} nodes not ready: {shown}",
        }
    else:
        cond = {"status": "True", "reason": "AllNodesReady", "message": f"all {len(names)} nodes are ready"}
    previous = next(
        (
            c
            for c in (old or {}).get("conditions") or []
            if isinstance(c, dict) and c.get("type") == CONDITION
        ),
        None,
    )
    since = (
        previous.get("lastTransitionTime") if previous and previous.get("status") == cond["status"] else None
    )
    condition = {
        "type": CONDITION,
        **cond,
        "lastTransitionTime": since or now,
        "observedGeneration": generation,
    }
    return {
        "nodes": names,
        "readyNodeNum": len(names) - len(not_ready),
        "unreadyNodeNum": len(not_ready),
        "conditions": [condition],
    }


class NodePoolController:
    def __init__(
        self,
        api: Any,
        nodes: Informer,
        *,
        config: NodePoolControllerConfig | None = None,
        observer: Observer | None = None,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self.nodes = nodes
        self.config = config or NodePoolControllerConfig()
        self._observer = observer
        self._wall = wall
        self._store: Store | None = None
        self._pools: Informer | None = None
        self._queue: WorkQueue | None = None
        self.patches = 0  # node patches sent (tests, logs)
        self.status_writes = 0
        nodes.add_handler(
            EventHandler(on_add=self._node_added, on_update=self._node_updated, on_delete=self._node_deleted)
        )

    # ---- wiring -------------------------------------------------------------------------------------

    def bind(self, stores: Mapping[str, Store]) -> None:
        """Extensions.store_users: take the NodePool Store once the server has made it."""
        self._store = stores[NODEPOOL.resource]

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the NodePool store was never bound")
        return self._store

    def members(self, pool: str) -> list[Obj]:
        return self.nodes.by_index(n.POOL_INDEX, pool)

    # ---- events → keys ------------------------------------------------------------------------------

    def _add(self, key: str) -> None:
        if self._queue is not None:  # not leading: nothing to do
            self._queue.add(key)

    def _node_added(self, node: Obj) -> None:
        self._add(f"node:{_name(node)}")
        if n.pool_of(node):
            self._add(f"pool:{n.pool_of(node)}")

    def _node_updated(self, old: Obj, new: Obj) -> None:
        if _pushed(old) != _pushed(new):
            self._add(f"node:{_name(new)}")
        if n.pool_of(old) != n.pool_of(new) or n.ready_status(old) != n.ready_status(new):
            for pool in {n.pool_of(old), n.pool_of(new)} - {""}:
                self._add(f"pool:{pool}")

    def _node_deleted(self, node: Obj) -> None:
        if n.pool_of(node):
            self._add(f"pool:{n.pool_of(node)}")

    def _pool_event(self, pool: Obj, spec_changed: bool = True) -> None:
        name = _name(pool)
        self._add(f"pool:{name}")
        if spec_changed:
            for node in self.members(name):
                self._add(f"node:{_name(node)}")

    def _pool_handler(self) -> EventHandler:
        return EventHandler(
            on_add=self._pool_event,
            on_update=lambda old, new: self._pool_event(new, old.get("spec") != new.get("spec")),
            on_delete=self._pool_event,
        )

    # ---- leading ------------------------------------------------------------------------------------

    async def lead(self) -> None:
        """Run the pool informer and the workers until cancelled (only while this replica leads)."""
        pools = Informer(StoreListWatcher(self.store), InformerConfig("nodepools"))
        pools.add_handler(self._pool_handler())
        queue = WorkQueue("nodepool", observer=self._observer)
        ctl = Controller(
            "nodepool", queue, self.reconcile, workers=self.config.workers, observer=self._observer
        )
        self._pools, self._queue = pools, queue
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(pools.run(), name="nodepool-informer")
                await pools.wait_synced()
                await self.nodes.wait_synced()
                for node in self.nodes.items():  # a new leader checks everything once
                    queue.add(f"node:{_name(node)}")
                for pool in pools.items():
                    queue.add(f"pool:{_name(pool)}")
                tg.create_task(ctl.run(), name="nodepool-workers")
        finally:
            queue.shutdown()
            self._pools = self._queue = None

    async def reconcile(self, key: str) -> None:
        kind, _, name = key.partition(":")
        if kind == "node":
            await self.reconcile_node(name)
        elif kind == "pool":
            await self.reconcile_pool(name)

    async def reconcile_node(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None or self._pools is None:
            return
        pool_name = n.pool_of(node)
        pool = self._pools.get(pool_name) if pool_name else None
        patch = node_patch(node, pool_attrs(pool))
        if patch is None:
            return
        path = f"/api/v1/nodes/{name}"
        if not await patch_or_requeue(
            self._api, path, patch, f"node {name}", timeout=self.config.request_timeout
        ):
            return
        self.patches += 1
        log.info("node %s: applied the attributes of pool %r", name, pool_name)

    async def reconcile_pool(self, name: str) -> None:
        if self._pools is None or self._pools.get(name) is None:
            return
        members = self.members(name)
        now = format_rfc3339(self._wall())

        async def with_status(current: Obj) -> Obj:
            gen = int((current.get("metadata") or {}).get("generation") or 1)
            status = pool_status(members, current.get("status"), gen, now)
            if same_status(current.get("status"), status):
                raise _Unchanged
            current["status"] = status
            return current

        try:
            await self.store.update("", name, with_status, subresource="status")
        except _Unchanged:
            return
        except apierrors.StatusError as exc:
            if exc.code == 404:
                return
            raise
        self.status_writes += 1

    # ---- delete admission (every replica) -----------------------------------------------------------

    async def admit_delete(self, pool: Obj) -> None:
        name = _name(pool)
        try:
            async with asyncio.timeout(self.config.sync_timeout):
                await self.nodes.wait_synced()
        except TimeoutError:
            raise apierrors.service_unavailable(
                f"cannot check whether nodepool {name} still has nodes: nodes not listed yet"
            ) from None
        members = sorted(_name(m) for m in self.members(name))
        if not members:
            return
        shown = ", ".join(members[:10]) + (", ..." if len(members) > 10 else "")
        raise apierrors.StatusError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on nodepools.{NODEPOOL.group} "{name}": the pool still has '
            f"{len(members)} node(s) ({shown}); remove their label {n.NODEPOOL_LABEL} first",
            NODEPOOL.group,
            NODEPOOL.resource,
            name,
            [apierrors.Cause("FieldValueForbidden", "can not delete nodepool with nodes", "status.nodes")],
        )


class _Unchanged(Exception):
    """The status is already current: nothing to write."""
