"""A read-only Storage served from memory, for kinds that are views computed by this process (edgenodes).

The owner calls `apply(name, obj | None)`; a change mints a new resourceVersion, updates the snapshot and
goes to every watcher (serialized once per output shape, like the watch cache). get/list/watch behave as
for stored kinds: label/field selectors, watch from a resourceVersion with the events since, initial
events, 410 Gone for a resourceVersion that cannot be resumed.

resourceVersions are minted by this process and mean something only to it (see `RVMint`): a watch or list
naming one from another replica or from before a restart gets 410 Gone, and clients relist. They grow
with the wall clock at start, so they also increase across restarts of one replica.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aggapi.machinery import apierrors
from aggapi.storage import errors
from aggapi.storage.interface import (
    ListOptions,
    ListResult,
    Obj,
    Preconditions,
    UpdateFunc,
    WatchEvent,
    WatchOptions,
)
from aggapi.storage.watchfeed import Change, QueueWatcher, WatcherSet

log = logging.getLogger(__name__)

INITIAL_EVENTS_END = "k8s.io/initial-events-end"
_TAG_BITS = 16


class RVMint:
    """resourceVersion = counter << 16 | tag(counter), where the tag is a keyed hash only this process can
    make: an rv issued by another replica (or before a restart) is recognized as foreign with probability
    1 - 2^-16 even when the counters overlap. The counter starts at the wall-clock milliseconds."""

    def __init__(self, start: int, secret: bytes) -> None:
        self._secret = secret
        self.start = start
        self.counter = start

    def _tag(self, counter: int) -> int:
        digest = hashlib.blake2b(counter.to_bytes(16, "big"), key=self._secret, digest_size=2).digest()
        return int.from_bytes(digest, "big")

    def next(self) -> int:
        self.counter += 1
        return self.current

    @property
    def current(self) -> int:
        return self.counter << _TAG_BITS | self._tag(self.counter)

    def counter_of(self, rv: int) -> int | None:
        """The counter of an rv this process issued (start..current); None if it is not one of ours."""
        counter = rv >> _TAG_BITS
        if not self.start <= counter <= self.counter or rv & ((1 << _TAG_BITS) - 1) != self._tag(counter):
            return None
        return counter


@dataclass(slots=True)
class _Event(Change):
    counter: int = 0


@dataclass(frozen=True, slots=True)
class MemoryViewConfig:
    bookmark_object: Obj  # apiVersion/kind of BOOKMARK objects
    ring_capacity: int = 4096  # events kept for watches resuming from a recent resourceVersion
    watcher_queue: int = 10_000
    ready_timeout: float = 5.0  # how long a read waits for the view's first complete state


def _name_of(key: str) -> str:
    return key.rstrip("/").rsplit("/", 1)[-1]


def _without_rv(obj: Obj) -> Obj:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}


class MemoryView:
    """Storage (Reader, Writer, Watcher) for one cluster-scoped view kind; writes are refused."""

    def __init__(
        self,
        config: MemoryViewConfig,
        *,
        ready: Callable[[], Awaitable[None]] | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        secret: bytes | None = None,
    ) -> None:
        self.config = config
        self._ready = ready
        self.mint = RVMint(clock_ms(), secret if secret is not None else os.urandom(16))
        self._objects: dict[str, Obj] = {}
        self._ring: deque[_Event] = deque()
        self._watchers = WatcherSet()

    # ---- the owner's side -----------------------------------------------------------------------------

    def apply(self, name: str, obj: Obj | None) -> bool:
        """Make `name` be `obj` (None: absent). Returns whether anything changed (and an event went out)."""
        cur = self._objects.get(name)
        if obj is None:
            if cur is None:
                return False
            rv = self.mint.next()
            gone = {**cur, "metadata": {**cur["metadata"], "resourceVersion": str(rv)}}
            del self._objects[name]
            self._emit(_Event("DELETED", gone, cur, rv, counter=self.mint.counter))
            return True
        if cur is not None and _without_rv(cur) == _without_rv(obj):
            return False
        rv = self.mint.next()
        new = {**obj, "metadata": {**obj.get("metadata", {}), "resourceVersion": str(rv)}}
        self._objects[name] = new
        self._emit(_Event("ADDED" if cur is None else "MODIFIED", new, cur, rv, counter=self.mint.counter))
        return True

    def names(self) -> list[str]:
        return list(self._objects)

    def _emit(self, ev: _Event) -> None:
        self._ring.append(ev)
        if len(self._ring) > self.config.ring_capacity:
            self._ring.popleft()
        self._watchers.dispatch(ev)

    def close_watchers(self) -> None:
        self._watchers.close_all()

    def forget(self, w: QueueWatcher) -> None:
        self._watchers.forget(w)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    # ---- Reader / Watcher -------------------------------------------------------------------------------

    async def _wait_ready(self) -> None:
        if self._ready is None:
            return
        try:
            async with asyncio.timeout(self.config.ready_timeout):
                await self._ready()
        except TimeoutError:
            raise errors.Unavailable("the view is not synced with kube-apiserver yet") from None

    def _counter(self, rv: str) -> int:
        counter = self.mint.counter_of(int(rv))
        if counter is None:
            raise errors.Expired(
                f"resourceVersion {rv} was not issued by this aggapi process (another replica, or before a "
                "restart): list again"
            )
        return counter

    async def get(self, key: str, *, resource_version: str = "") -> Obj:
        await self._wait_ready()
        obj = self._objects.get(_name_of(key))
        if obj is None:
            raise errors.KeyNotFound(key)
        return copy.deepcopy(obj)

    async def get_list(self, prefix: str, opts: ListOptions) -> ListResult:
        """Objects are shared with the view: callers must not mutate them. limit is not applied (a server
        may return everything; no continue token is set)."""
        await self._wait_ready()
        rv = opts.resource_version
        if rv not in ("", "0"):
            counter = self._counter(rv)
            if opts.resource_version_match == "Exact" and counter != self.mint.counter:
                raise errors.Expired(f"too old resource version: {rv} ({self.mint.current})")
        items = [self._objects[n] for n in sorted(self._objects)]
        return ListResult([o for o in items if opts.predicate.matches(o)], self.mint.current)

    async def watch(self, prefix: str, opts: WatchOptions) -> QueueWatcher:
        await self._wait_ready()
        rv = opts.resource_version
        initial = opts.send_initial_events if opts.send_initial_events is not None else rv in ("", "0")
        history: list[_Event] = []
        if not initial and rv not in ("", "0"):
            start = self._counter(rv)
            if start < self.mint.counter:
                if not self._ring or self._ring[0].counter > start + 1:
                    raise errors.Expired(f"too old resource version: {rv} ({self.mint.current})")
                history = [e for e in self._ring if e.counter > start]
        w = QueueWatcher(opts.predicate, self.config.watcher_queue, self.forget)
        if initial:
            for name in sorted(self._objects):
                obj = self._objects[name]
                if opts.predicate.matches(obj):
                    w.push(WatchEvent("ADDED", obj, int(obj["metadata"]["resourceVersion"])))
            if opts.send_initial_events and opts.allow_bookmarks:
                meta: Obj = {
                    "resourceVersion": str(self.mint.current),
                    "annotations": {INITIAL_EVENTS_END: "true"},
                }
                w.push(
                    WatchEvent(
                        "BOOKMARK", {**self.config.bookmark_object, "metadata": meta}, self.mint.current
                    )
                )
        for ev in history:
            wev = ev.for_watcher(opts.predicate)
            if wev is not None:
                w.push(wev)
        self._watchers.add(w)
        return w

    # ---- Writer: never reached through the API (the kind's verbs exclude writes) -------------------------

    def _read_only(self) -> apierrors.StatusError:
        return apierrors.method_not_allowed("write", "a read-only view")

    async def create(self, key: str, obj: Obj, *, dry_run: bool = False) -> Obj:
        raise self._read_only()

    async def guaranteed_update(
        self,
        key: str,
        update: UpdateFunc,
        *,
        preconditions: Preconditions | None = None,
        dry_run: bool = False,
    ) -> Obj:
        raise self._read_only()

    async def delete(
        self,
        key: str,
        *,
        preconditions: Preconditions | None = None,
        validate: Callable[[Obj], None] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        raise self._read_only()
