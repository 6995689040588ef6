"""What every server-side watch shares: an event as a watcher with a selector sees it, and the bounded
queue a dispatcher pushes into and an HTTP handler drains. Used by the watch cache and by in-memory
(virtual) resources."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aggapi.storage.interface import EventType, Obj, Predicate, WatchEvent

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Change:
    """One change of one object. `shared` memoizes serializations across all watchers of this event."""

    type: EventType
    obj: Obj
    prev: Obj | None
    rv: int
    shared: dict[Any, bytes] = field(default_factory=dict)
    _as_deleted: WatchEvent | None = None

    def for_watcher(self, pred: Predicate) -> WatchEvent | None:
        """The event as one watcher sees it: a modification moving an object out of its selector is a
        DELETED of the previous state (at this revision); moving in is an ADDED (kube's cacheWatcher)."""
        if self.type == "DELETED":
            return WatchEvent("DELETED", self.obj, self.rv, self.shared) if pred.matches(self.obj) else None
        cur = pred.matches(self.obj)
        old = self.prev is not None and pred.matches(self.prev)
        if cur:
            typ: EventType = "MODIFIED" if old else "ADDED"
            return WatchEvent(typ, self.obj, self.rv, self.shared)
        if old and self.prev is not None:
            if self._as_deleted is None:
                gone = {**self.prev, "metadata": {**self.prev["metadata"], "resourceVersion": str(self.rv)}}
                self._as_deleted = WatchEvent("DELETED", gone, self.rv, {})
            return self._as_deleted
        return None


class QueueWatcher:
    """One client's watch: events pushed by a dispatcher, drained by the HTTP handler. A watcher that
    falls `max_queue` events behind is closed (its client re-watches from its last resourceVersion)."""

    def __init__(
        self,
        predicate: Predicate,
        max_queue: int,
        on_stop: Callable[[QueueWatcher], None],
        *,
        start_rv: int = 0,
        bookmarks: bool = False,
    ) -> None:
        self.predicate = predicate
        self.start_rv = start_rv  # events at or before this are not this watcher's
        self.bookmarks = bookmarks
        self.last_rv = 0
        self.closed = False
        self._queue: deque[WatchEvent] = deque()
        self._max = max_queue
        self._wake = asyncio.Event()
        self._on_stop = on_stop

    def push(self, ev: WatchEvent) -> None:
        if self.closed:
            return
        if len(self._queue) >= self._max:
            log.warning("closing a watcher that fell %d events behind", self._max)
            self.stop()
            return
        self._queue.append(ev)
        self.last_rv = max(self.last_rv, ev.resource_version)
        self._wake.set()

    def stop(self) -> None:
        self.closed = True
        self._wake.set()
        self._on_stop(self)

    async def __aiter__(self) -> AsyncIterator[WatchEvent]:
        while True:
            while self._queue:
                yield self._queue.popleft()
            if self.closed:
                return
            self._wake.clear()
            await self._wake.wait()


class WatcherSet:
    """The open watches of one feed: fan-out of a change to each (as its selector sees it, and only
    after where it started), closing them all, and the count for metrics."""

    def __init__(self) -> None:
        self._all: set[QueueWatcher] = set()

    def add(self, w: QueueWatcher) -> None:
        self._all.add(w)

    def forget(self, w: QueueWatcher) -> None:
        self._all.discard(w)

    def __iter__(self) -> Iterator[QueueWatcher]:
        return iter(list(self._all))  # a copy: pushing may stop (and so forget) a watcher

    def __len__(self) -> int:
        return len(self._all)

    def dispatch(self, change: Change) -> None:
        for w in self:
            if change.rv <= w.start_rv:
                continue  # before where this watcher started (its snapshot already reflects it)
            wev = change.for_watcher(w.predicate)
            if wev is not None:
                w.push(wev)

    def close_all(self) -> None:
        for w in self:
            w.stop()
