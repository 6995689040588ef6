"""A small informer: list, then watch from the list's resourceVersion, keep a local cache keyed by
namespace/name (with optional indexers), and tell event handlers what changed.

Like client-go's reflector: a watch that ends normally is resumed from the last resourceVersion seen
(BOOKMARKs move it too); 410 Gone (an expired resourceVersion, as a status or an ERROR event) relists at
once; any other failure relists after a jittered exponential backoff. A relist is diffed against the
cache, so handlers see only real adds, updates and deletes. `has_synced` turns true after the first
complete list and stays true.

Handlers run synchronously on the informer's task, in event order; an exception in one is logged and
does not stop the informer. The transport is a `ListWatcher` (controllers/kube.py talks to kube-apiserver).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Indexer = Callable[[Obj], Iterable[str]]


class Expired(Exception):
    """The resourceVersion (or continue token) is too old: relist."""


class ListWatchError(Exception):
    """kube-apiserver could not be reached or answered an error."""


class ListWatcher(Protocol):
    async def list(self) -> tuple[list[Obj], str]:
        """Every object and the list's resourceVersion."""
        ...

    def watch(self, resource_version: str) -> AbstractAsyncContextManager[AsyncIterator[Obj]]:
        """Watch events (`{"type": ..., "object": ...}`) from `resource_version` until the server ends
        the watch; raises Expired or ListWatchError."""
        ...


@dataclass(frozen=True, slots=True)
class EventHandler:
    on_add: Callable[[Obj], None] | None = None
    on_update: Callable[[Obj, Obj], None] | None = None  # (old, new)
    on_delete: Callable[[Obj], None] | None = None  # the last state known


@dataclass(frozen=True, slots=True)
class InformerConfig:
    name: str  # for logs, e.g. "nodes"
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    short_watch: float = 1.0  # a watch that ends sooner than this with no events counts as a failure


def object_key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns, name = meta.get("namespace") or "", str(meta.get("name", ""))
    return f"{ns}/{name}" if ns else name


class Informer:
    def __init__(
        self,
        lw: ListWatcher,
        config: InformerConfig,
        *,
        indexers: Mapping[str, Indexer] | None = None,
        transform: Callable[[Obj], Obj] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = lambda: asyncio.get_running_loop().time(),
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._lw = lw
        self.config = config
        self._indexers = dict(indexers or {})
        self._transform = transform
        self._sleep = sleep
        self._now = monotonic
        self._rng = rng
        self._items: dict[str, Obj] = {}
        self._indices: dict[str, dict[str, set[str]]] = {n: {} for n in self._indexers}
        self._handlers: list[EventHandler] = []
        self._synced = asyncio.Event()
        self.resource_version = ""
        self.relists = 0  # lists done (for tests and metrics)

    # ---- reading the cache --------------------------------------------------------------------------

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def get(self, key: str) -> Obj | None:
        """The cached object (shared: do not mutate) by "name" or "namespace/name"."""
        return self._items.get(key)

    def items(self) -> list[Obj]:
        return list(self._items.values())

    def by_index(self, index: str, value: str) -> list[Obj]:
        return [self._items[k] for k in sorted(self._indices[index].get(value, ()))]

    def add_handler(self, handler: EventHandler) -> None:
        """Register before run(); a handler added later is not told about objects already cached."""
        self._handlers.append(handler)

    # ---- the loop -----------------------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                if await self._watch_once():
                    failures = 0
                    continue  # ended normally: resume from the last resourceVersion
                failures += 1
            except Expired as exc:
                log.info("%s informer: %s; relisting", self.config.name, exc)
                need_list = True
                continue
            except ListWatchError as exc:
                failures += 1
                need_list = True
                log.warning("%s informer: %s", self.config.name, exc)
            delay = self._backoff(failures)
            log.info("%s informer: retrying in %.1fs", self.config.name, delay)
            await self._sleep(delay)

    def _backoff(self, failures: int) -> float:
        c = self.config
        base = min(c.backoff_max, c.backoff_initial * 2.0 ** max(0, failures - 1))
        return float(base * (0.5 + self._rng() / 2))  # jitter: replicas do not retry in lockstep

    async def _relist(self) -> None:
        items, rv = await self._lw.list()
        fresh: dict[str, Obj] = {}
        for raw in items:
            obj = self._prepare(raw)
            fresh[object_key(obj)] = obj
        old = self._items
        self._items = fresh
        self._rebuild_indices()
        self.resource_version = rv
        self.relists += 1
        for key, obj in old.items():
            if key not in fresh:
                self._notify("delete", obj)
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None:
                self._notify("add", obj)
            elif _rv(prev) != _rv(obj):
                self._notify("update", obj, prev)
        if not self._synced.is_set():
            log.info("%s informer: synced %d objects at resourceVersion %s", self.config.name, len(fresh), rv)
        self._synced.set()

    async def _watch_once(self) -> bool:
        """One watch from the current resourceVersion; False when it ended suspiciously fast."""
        started, events = self._now(), 0
        async with self._lw.watch(self.resource_version) as stream:
            async for ev in stream:
                events += 1
                self._apply(ev)
        return events > 0 or self._now() - started >= self.config.short_watch

    def _apply(self, ev: Obj) -> None:
        typ, raw = ev.get("type"), ev.get("object") or {}
        if typ == "ERROR":
            code, msg = raw.get("code"), raw.get("message", "watch error")
            if code == 410:
                raise Expired(msg)
            raise ListWatchError(f"watch ERROR event {code}: {msg}")
        if typ == "BOOKMARK":
            self.resource_version = _rv(raw) or self.resource_version
            return
        if typ not in ("ADDED", "MODIFIED", "DELETED"):
            raise ListWatchError(f"unknown watch event type {typ!r}")
        obj = self._prepare(raw)
        key = object_key(obj)
        prev = self._items.get(key)
        if typ == "DELETED":
            if prev is not None:
                self._unindex(key, prev)
                del self._items[key]
                self._notify("delete", obj)
        else:
            if prev is not None:
                self._unindex(key, prev)
            self._items[key] = obj
            self._index(key, obj)
            if prev is None:
                self._notify("add", obj)
            else:
                self._notify("update", obj, prev)
        self.resource_version = _rv(obj) or self.resource_version

    def _prepare(self, raw: Obj) -> Obj:
        return self._transform(raw) if self._transform is not None else raw

    # ---- indices and handlers -----------------------------------------------------------------------

    def _rebuild_indices(self) -> None:
        self._indices = {n: {} for n in self._indexers}
        for key, obj in self._items.items():
            self._index(key, obj)

    def _index(self, key: str, obj: Obj) -> None:
        for name, fn in self._indexers.items():
            for value in fn(obj):
                self._indices[name].setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: Obj) -> None:
        for name, fn in self._indexers.items():
            for value in fn(obj):
                keys = self._indices[name].get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._indices[name][value]

    def _notify(self, what: str, obj: Obj, old: Obj | None = None) -> None:
        for h in self._handlers:
            try:
                if what == "add" and h.on_add is not None:
                    h.on_add(obj)
                elif what == "update" and h.on_update is not None and old is not None:
                    h.on_update(old, obj)
                elif what == "delete" and h.on_delete is not None:
                    h.on_delete(obj)
            except Exception:  # a handler's bug must not stop the informer for everyone else
                log.exception("%s informer: %s handler failed", self.config.name, what)


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
