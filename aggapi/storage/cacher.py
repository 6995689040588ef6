"""Watch cache for one resource: one etcd watch feeds an in-memory store and a bounded ring of recent
events; get/list/watch are served from it (kube's Cacher). Writes go straight to the EtcdStore."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aggapi.storage import errors
from aggapi.storage.etcd import WatchBatch, prefix_end
from aggapi.storage.etcd import WatchEvent as EtcdEvent
from aggapi.storage.etcdstore import EtcdStore, decode
from aggapi.storage.history import fetch_history
from aggapi.storage.interface import (
    EventType,
    ListOptions,
    ListResult,
    Obj,
    Preconditions,
    Predicate,
    UpdateFunc,
    WatchEvent,
    WatchOptions,
)
from aggapi.storage.watchfeed import Change, QueueWatcher, WatcherSet

log = logging.getLogger(__name__)

INITIAL_EVENTS_END = "k8s.io/initial-events-end"


@dataclass(frozen=True, slots=True)
class CacheConfig:
    capacity: int = 4096  # events kept for watch resumption before falling back to etcd history
    fresh_timeout: float = 3.0  # how long a consistent read waits for the cache to catch up
    bookmark_interval: float = 60.0
    watcher_queue: int = 10_000  # a watcher further behind than this is closed (it re-watches)
    retry_delay: float = 0.5  # after an etcd watch failure


@dataclass(slots=True)
class CacheEvent(Change):
    key: str = ""


def to_cache_event(ev: EtcdEvent, prev: Obj | None) -> CacheEvent:
    """An etcd event as the cache records it; a DELETED carries the last state at the deletion revision."""
    key = ev.kv.key.decode()
    if prev is None and ev.prev_kv is not None:
        prev = decode(ev.prev_kv)
    rv = ev.kv.mod_revision
    if ev.type == "DELETE":
        base = prev if prev is not None else {"metadata": {"name": key.rsplit("/", 1)[-1]}}
        gone = {**base, "metadata": {**base.get("metadata", {}), "resourceVersion": str(rv)}}
        return CacheEvent("DELETED", gone, prev, rv, key=key)
    obj = decode(ev.kv)
    typ: EventType = "ADDED" if ev.kv.create_revision == rv else "MODIFIED"
    return CacheEvent(typ, obj, prev if typ == "MODIFIED" else None, rv, key=key)


CacheWatcher = QueueWatcher


class Cacher:
    """Serves one resource prefix from memory. `run()` is the long-running feed loop."""

    def __init__(
        self,
        store: EtcdStore,
        prefix: str,
        *,
        bookmark_object: Obj,
        config: CacheConfig | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.config = config or CacheConfig()
        self._bookmark_object = bookmark_object
        self._sleep = sleep
        self.objects: dict[str, Obj] = {}
        self.rev = 0
        self.window_start = 0  # watches from a revision >= this are served from the ring
        self.ring: deque[CacheEvent] = deque()
        self.synced = asyncio.Event()
        self._progress = asyncio.Condition()
        self._watchers = WatcherSet()
        self._watching = False
        self.applied = 0  # events applied so far: waiters wake when it moves

    # ---- feed -------------------------------------------------------------------------------------

    async def run(self) -> None:
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
            except errors.Compacted:
                log.warning("watch cache %s: revision %d compacted, relisting", self.prefix, self.rev + 1)
                need_list = True
            except errors.Unavailable as exc:
                log.warning("watch cache %s: etcd unavailable (%s); retrying", self.prefix, exc)
                await self._sleep(self.config.retry_delay)
            except errors.StorageError as exc:
                # Anything else etcd answered: never let the feed die (the cache would freeze while
                # looking healthy); start over from a fresh list.
                log.error("watch cache %s: %s; relisting", self.prefix, exc)
                need_list = True
                await self._sleep(self.config.retry_delay)

    async def _list(self) -> None:
        objects: dict[str, Obj] = {}
        token, rev = "", 0
        while True:
            page = await self.store.get_list(self.prefix, ListOptions(limit=5000, continue_token=token))
            rev = page.resource_version
            for obj in page.items:
                objects[self._key_of(obj)] = obj
            if not page.continue_token:
                break
            token = page.continue_token
        self._watchers.close_all()  # a relist breaks continuity: watchers must relist too
        self.objects, self.rev, self.window_start = objects, rev, rev
        self.ring.clear()
        self.synced.set()
        await self._advanced()
        log.info("watch cache %s: listed %d objects at revision %d", self.prefix, len(objects), rev)

    def _key_of(self, obj: Obj) -> str:
        meta = obj["metadata"]
        ns = meta.get("namespace")
        return f"{self.prefix}{ns}/{meta['name']}" if ns else f"{self.prefix}{meta['name']}"

    async def _watch(self) -> None:
        pkey = self.prefix.encode()
        # No progress notifications: etcd before 3.5.13 may send one ahead of events still in flight
        # (etcd-io/etcd#15220), so the cache's revision moves only with events; freshness is proven
        # another way (see _equivalent_at).
        start = self.rev + 1
        async with self.store.client.watch(
            pkey, prefix_end(pkey), start_revision=start, progress_notify=False
        ) as w:
            self._watching = True
            try:
                async for batch in w:
                    self._apply(batch)
                    await self._advanced()
            finally:
                self._watching = False
        raise errors.Unavailable("etcd watch stream ended")

    def _apply(self, batch: WatchBatch) -> None:
        for ev in batch.events:
            cev = self._convert(ev)
            if cev.type == "DELETED":
                self.objects.pop(cev.key, None)
            else:
                self.objects[cev.key] = cev.obj
            self.rev = max(self.rev, cev.rv)
            self.applied += 1
            self.ring.append(cev)
            if len(self.ring) > self.config.capacity:
                self.window_start = self.ring.popleft().rv
            self._watchers.dispatch(cev)

    def _convert(self, ev: EtcdEvent) -> CacheEvent:
        key = ev.kv.key.decode()
        return to_cache_event(ev, self.objects.get(key))

    async def _advanced(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def bookmark_loop(self) -> None:
        """Periodic BOOKMARKs tell idle watchers how far they are current, so they resume cheaply."""
        while True:
            await self._sleep(self.config.bookmark_interval)
            self.send_bookmarks()

    def send_bookmarks(self) -> None:
        for w in self._watchers:
            rv = max(self.rev, w.start_rv)
            if w.bookmarks and w.last_rv < rv:
                w.push(self._bookmark(rv, initial_end=False))

    def _bookmark(self, rv: int, *, initial_end: bool) -> WatchEvent:
        meta: Obj = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {INITIAL_EVENTS_END: "true"}
        return WatchEvent("BOOKMARK", {**self._bookmark_object, "metadata": meta}, rv)

    # ---- freshness --------------------------------------------------------------------------------

    async def wait_fresh(self, rev: int, timeout: float | None = None) -> bool:
        """Wait until the cache's state is the state at revision `rev`: it has applied the events up to
        `rev`, or etcd shows that nothing under this prefix changed between the cache and `rev`."""
        if self.rev >= rev and self.synced.is_set():
            return True
        try:
            async with asyncio.timeout(timeout if timeout is not None else self.config.fresh_timeout):
                await self.synced.wait()
                while self.rev < rev:
                    applied = self.applied
                    if self._watching and await self._equivalent_at(rev):
                        return True
                    await self._wait_applied_after(applied)
        except TimeoutError:
            return False
        return True

    async def _wait_applied_after(self, count: int) -> None:
        async with self._progress:
            await self._progress.wait_for(lambda: self.applied != count)

    async def _equivalent_at(self, rev: int) -> bool:
        """One etcd range at `rev` (the count under the prefix and the newest mod_revision) tells whether
        the cache already equals etcd's state at `rev`. Sound: an unapplied put shows as a newer
        mod_revision; an unapplied delete shows as a count mismatch unless an unapplied put (newer
        mod_revision) offsets it."""
        pkey = self.prefix.encode()
        try:
            res = await self.store.client.range(
                pkey, prefix_end(pkey), revision=rev, limit=1, keys_only=True, newest_first=True
            )
        except errors.StorageError:  # compacted, a future revision (not yet written), or unreachable
            return False
        if self.rev >= rev:
            return True
        newest = res.kvs[0].mod_revision if res.kvs else 0
        return self.rev >= newest and res.count == len(self.objects)

    async def _consistent_rev(self) -> int | None:
        """kube 1.31+ consistent read from cache: quorum revision from etcd, then wait for the cache."""
        rev = await self.store.current_revision()
        return rev if await self.wait_fresh(rev) else None

    # ---- reads ------------------------------------------------------------------------------------

    async def get(self, key: str, *, resource_version: str = "") -> Obj:
        if resource_version == "" or not self.synced.is_set():
            return await self.store.get(key, resource_version="")
        rv = int(resource_version)
        if rv and not await self.wait_fresh(rv):
            raise errors.TooLargeResourceVersion(rv, self.rev)
        obj = self.objects.get(key)
        if obj is None:
            raise errors.KeyNotFound(key)
        return copy.deepcopy(obj)

    async def get_list(self, prefix: str, opts: ListOptions) -> ListResult:
        """Objects in the result are shared with the cache: callers must not mutate them."""
        rv, match = opts.resource_version, opts.resource_version_match
        if opts.continue_token or (opts.limit and rv != "0") or match == "Exact" or not self.synced.is_set():
            return await self.store.get_list(prefix, opts)
        at = self.rev
        if rv == "":
            fresh = await self._consistent_rev()
            if fresh is None:
                return await self.store.get_list(prefix, opts)
            at = fresh
        elif rv != "0":
            at = int(rv)
            if not await self.wait_fresh(at):
                raise errors.TooLargeResourceVersion(at, self.rev)
        # The cache equals etcd's state at `at` (and at its own revision, if that is newer).
        return ListResult(self._snapshot(prefix, opts.predicate), max(self.rev, at))

    def _snapshot(self, prefix: str, pred: Predicate) -> list[Obj]:
        if not prefix.endswith("/"):
            prefix += "/"
        keys = sorted(k for k in self.objects if k.startswith(prefix))
        return [o for o in (self.objects[k] for k in keys) if pred.matches(o)]

    # ---- watch ------------------------------------------------------------------------------------

    async def watch(self, prefix: str, opts: WatchOptions) -> CacheWatcher:
        async with asyncio.timeout(self.config.fresh_timeout):
            await self.synced.wait()
        rv = opts.resource_version
        initial = opts.send_initial_events if opts.send_initial_events is not None else rv in ("", "0")
        if rv == "" and initial:  # consistent start: the snapshot is etcd's current state
            want = await self.store.current_revision()
            if not await self.wait_fresh(want):
                raise errors.TooLargeResourceVersion(want, self.rev)
            start = max(self.rev, want)
        elif rv in ("", "0"):
            start = self.rev
        else:
            start = int(rv)
            if start > self.rev and not await self.wait_fresh(start):
                raise errors.TooLargeResourceVersion(start, self.rev)
            start = max(start, self.rev) if initial else start
        history: list[CacheEvent] = []
        if not initial and start < self.window_start:
            history, start = await self._history(prefix, start)
        # From here to registration nothing awaits, so no event can slip between snapshot and feed.
        w = QueueWatcher(
            opts.predicate,
            self.config.watcher_queue,
            self.forget,
            start_rv=start,
            bookmarks=opts.allow_bookmarks,
        )
        if initial:
            for obj in self._snapshot(prefix, opts.predicate):
                w.push(WatchEvent("ADDED", obj, int(obj["metadata"]["resourceVersion"])))
            if opts.send_initial_events and opts.allow_bookmarks:
                w.push(self._bookmark(start, initial_end=True))
        for cev in history:
            if cev.key.startswith(prefix):
                wev = cev.for_watcher(opts.predicate)
                if wev is not None:
                    w.push(wev)
        for cev in self.ring:
            if cev.rv > start and cev.key.startswith(prefix):
                wev = cev.for_watcher(opts.predicate)
                if wev is not None:
                    w.push(wev)
        self._watchers.add(w)
        return w

    async def _history(self, prefix: str, after: int) -> tuple[list[CacheEvent], int]:
        """Events after `after` that the ring no longer holds, replayed from etcd's MVCC history up to the
        oldest event the ring still holds: that event's arrival proves the replay complete (see
        fetch_history). Returns the events and the revision from which the ring takes over."""
        while True:
            if not self.ring:
                # No event marks where a replay would be complete (e.g. nothing written since a relist).
                raise errors.Expired(f"too old resource version: {after} ({self.window_start})")
            until = self.ring[0].rv
            try:
                raw = await fetch_history(self.store.client, self.prefix, after, until)
            except errors.Compacted as exc:
                raise errors.Expired(f"too old resource version: {after} ({exc.compact_revision})") from exc
            horizon = self.window_start  # the ring holds every event after this
            if horizon <= until:
                break
        state: dict[str, Obj] = {}
        events: list[CacheEvent] = []
        for ev in raw:
            if ev.kv.mod_revision > horizon:
                break  # the ring has it
            cev = to_cache_event(ev, state.get(ev.kv.key.decode()))
            events.append(cev)
            if cev.type == "DELETED":
                state.pop(cev.key, None)
            else:
                state[cev.key] = cev.obj
        return events, horizon

    def close_watchers(self) -> None:
        """End every open watch (clients re-watch elsewhere); used on shutdown so it is not held up."""
        self._watchers.close_all()

    def forget(self, w: CacheWatcher) -> None:
        self._watchers.forget(w)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    # ---- writes (straight to etcd; the cache learns of them through its watch) ----------------------

    async def create(self, key: str, obj: Obj, *, dry_run: bool = False) -> Obj:
        return await self.store.create(key, obj, dry_run=dry_run)

    async def guaranteed_update(
        self,
        key: str,
        update: UpdateFunc,
        *,
        preconditions: Preconditions | None = None,
        dry_run: bool = False,
    ) -> Obj:
        return await self.store.guaranteed_update(key, update, preconditions=preconditions, dry_run=dry_run)

    async def delete(
        self,
        key: str,
        *,
        preconditions: Preconditions | None = None,
        validate: Callable[[Obj], None] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        return await self.store.delete(key, preconditions=preconditions, validate=validate, dry_run=dry_run)
