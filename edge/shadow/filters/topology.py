"""What the filters know about the cluster: Services, Nodes and NodePools, looked up synchronously.

`TopologySource` is what filters read. `TopologyIndex` is an in-memory one the proxy feeds from its
cache and watch streams (`upsert`/`delete`/`replace`), or `TopologyFeeder` keeps it current by
list+watch through a `KubeReader` (upstream when online, the disk cache when offline) — so lookups never
wait on the network and keep answering offline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Literal, Protocol

from edge.aio import within
from edge.shadow.filters.base import Obj, meta

log = logging.getLogger(__name__)

Kind = Literal["Service", "Node", "NodePool"]
KINDS: tuple[Kind, ...] = ("Service", "Node", "NodePool")

SERVICES_PATH = "/api/v1/services"
NODES_PATH = "/api/v1/nodes"
NODEPOOLS_PATH = "/apis/edge.aggapi.io/v1alpha1/nodepools"


class TopologySource(Protocol):
    def node(self, name: str) -> dict[str, Any] | None: ...

    def nodepool(self, name: str) -> dict[str, Any] | None: ...

    def service(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def nodepools(self) -> list[dict[str, Any]]: ...


def _slim(kind: Kind, obj: Obj) -> Obj:
    """Only what filters read: Node objects carry image lists and conditions, Services their specs;
    keeping all of it for every Service of the cluster would cost the edge node memory for nothing."""
    m = meta(obj)
    keep: Obj = {"metadata": {k: m[k] for k in ("name", "namespace", "labels", "annotations") if k in m}}
    if kind == "NodePool":
        status = obj.get("status")
        if isinstance(status, dict) and "nodes" in status:
            keep["status"] = {"nodes": status["nodes"]}
    return keep


def _key(kind: Kind, obj: Obj) -> tuple[str, str] | None:
    m = meta(obj)
    name = m.get("name")
    if not isinstance(name, str) or not name:
        return None
    ns = m.get("namespace") if kind == "Service" else ""
    return (ns if isinstance(ns, str) else "", name)


class TopologyIndex:
    """In-memory TopologySource. Stores slim copies (metadata name/namespace/labels/annotations, and a
    NodePool's status.nodes), so what it returns is never the caller's object."""

    def __init__(self) -> None:
        self._objs: dict[Kind, dict[tuple[str, str], Obj]] = {k: {} for k in KINDS}

    def upsert(self, kind: Kind, obj: Obj) -> None:
        key = _key(kind, obj)
        if key is not None:
            self._objs[kind][key] = _slim(kind, obj)

    def delete(self, kind: Kind, obj: Obj) -> None:
        key = _key(kind, obj)
        if key is not None:
            self._objs[kind].pop(key, None)

    def replace(self, kind: Kind, objs: Iterable[Obj]) -> None:
        """Everything of `kind` after a (re)list: objects deleted while not watching disappear too."""
        fresh: dict[tuple[str, str], Obj] = {}
        for o in objs:
            key = _key(kind, o)
            if key is not None:
                fresh[key] = _slim(kind, o)
        self._objs[kind] = fresh

    def count(self, kind: Kind) -> int:
        return len(self._objs[kind])

    def node(self, name: str) -> dict[str, Any] | None:
        return self._objs["Node"].get(("", name))

    def nodepool(self, name: str) -> dict[str, Any] | None:
        return self._objs["NodePool"].get(("", name))

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objs["Service"].get((namespace, name))

    def nodepools(self) -> list[dict[str, Any]]:
        return list(self._objs["NodePool"].values())


class KubeReader(Protocol):
    """Reads collections the Kubernetes way. `path` may carry a query (e.g. a fieldSelector); the reader
    adds its own parameters. Failures are raised; a watch ends by returning or with an ERROR event."""

    async def list(self, path: str) -> tuple[list[dict[str, Any]], str]: ...  # (items, resourceVersion)

    def watch(self, path: str, rv: str) -> AsyncIterator[tuple[str, dict[str, Any]]]: ...  # (type, object)


class TopologyFeeder:
    """Keeps a TopologyIndex current: one list+watch loop per kind, each independent (NodePools served by
    aggapi through aggregation can be unavailable while Services and Nodes are fine).

    `own_node`: watch only that Node (fieldSelector) instead of every Node of the cluster. Filters need
    the own node's labels; pool members come from NodePool status.nodes, so the default keeps every edge
    node from watching all Nodes (a real load at scale). Pass None to watch all Nodes.
    """

    def __init__(
        self,
        reader: KubeReader,
        index: TopologyIndex,
        *,
        own_node: str | None,
        list_timeout: float = 30.0,
        idle_timeout: float = 330.0,  # longer than a server's watch timeout (5 min) plus slack
        min_watch: float = 1.0,
        backoff: tuple[float, float] = (0.5, 30.0),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader = reader
        self.index = index
        nodes = NODES_PATH if own_node is None else f"{NODES_PATH}?fieldSelector=metadata.name%3D{own_node}"
        self.paths: dict[Kind, str] = {"Service": SERVICES_PATH, "Node": nodes, "NodePool": NODEPOOLS_PATH}
        self.list_timeout = list_timeout
        self.idle_timeout = idle_timeout
        self.min_watch = min_watch
        self.backoff = backoff
        self.sleep = sleep
        self.clock = clock
        self._synced: dict[Kind, asyncio.Event] = {k: asyncio.Event() for k in KINDS}

    def synced(self, kind: Kind | None = None) -> bool:
        """Listed at least once (one kind, or all of them)."""
        kinds = KINDS if kind is None else (kind,)
        return all(self._synced[k].is_set() for k in kinds)

    async def wait_synced(self, kind: Kind) -> None:
        await self._synced[kind].wait()

    async def run(self) -> None:
        """Runs until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for kind in KINDS:
                tg.create_task(self.run_kind(kind), name=f"shadow-topology-{kind.lower()}")

    async def run_kind(self, kind: Kind) -> None:
        path = self.paths[kind]
        delay = self.backoff[0]
        while True:
            try:
                items, rv = await within(self.reader.list(path), self.list_timeout)
                self.index.replace(kind, items)
                self._synced[kind].set()
                progressed = await self._watch(kind, path, rv)
            except Exception as e:  # any failure: keep what we have, back off, relist
                log.warning("topology: %s failed (retry in %.1fs): %s", path, delay, e)
                progressed = False
            if progressed:  # a normal end (410 Gone after a long watch): relist at once
                delay = self.backoff[0]
                continue
            # Failing, or an offline cache ending watches at once: relisting in a tight loop helps nobody.
            await self.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    async def _watch(self, kind: Kind, path: str, rv: str) -> bool:
        """Watch from `rv`, re-watching from the last resourceVersion seen (bookmarks included) while
        streams end normally. Returns when a relist is due: on an ERROR event (e.g. 410 Gone), or when a
        stream ended without progress; True if the watch made progress before that."""
        progressed = False
        while True:
            started, events = self.clock(), 0
            stream = self.reader.watch(path, rv)
            try:
                while True:
                    try:
                        etype, obj = await within(anext(stream), self.idle_timeout)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:  # silent for too long (a lost connection): start a new one
                        log.info("topology: watch %s idle for %.0fs, re-watching", path, self.idle_timeout)
                        break
                    if etype == "ERROR":
                        log.info("topology: watch %s: %s, relisting", path, obj.get("message", obj))
                        return progressed
                    events += 1
                    progressed = True
                    new_rv = meta(obj).get("resourceVersion")
                    if isinstance(new_rv, str) and new_rv:
                        rv = new_rv
                    if etype in ("ADDED", "MODIFIED"):
                        self.index.upsert(kind, obj)
                    elif etype == "DELETED":
                        self.index.delete(kind, obj)
            finally:
                close = getattr(stream, "aclose", None)
                if close is not None:
                    await within(close(), 5.0)
            if events == 0 and self.clock() - started < self.min_watch:
                return progressed
            progressed = True
