"""A rate-limited work queue of string keys, like client-go's workqueue.RateLimitingInterface.

- Dedup: a key added while it waits is queued once; a key added while a worker processes it is marked
  dirty and queued again when the worker calls done() — never processed by two workers at once.
- Per-key exponential backoff: add_rate_limited(key) delays the key by base·2^failures (capped); forget()
  resets the count after a success.
- Delayed adds (add_after) wait in a heap until due; get() wakes for the earliest.

The clock is injectable; waits for delayed keys are computed against it, so tests drive a fake clock and
call wakeup() instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class QueueShutDown(Exception):
    """get() on a queue that was shut down."""


class QueueObserver(Protocol):
    def queue_depth(self, queue: str, depth: int) -> None: ...

    def queue_add(self, queue: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 0.005
    cap: float = 300.0

    def delay(self, failures: int) -> float:
        """The delay before retry number `failures` (1 = the first retry)."""
        return float(min(self.cap, self.base * 2.0 ** max(0, failures - 1)))


class WorkQueue:
    def __init__(
        self,
        name: str,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] | None = None,
        observer: QueueObserver | None = None,
    ) -> None:
        self.name = name
        self._backoff = backoff or Backoff()
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._observer = observer
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()  # queued, or to be queued again when processing ends
        self._processing: set[str] = set()
        self._delayed: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._failures: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._shut = False

    # ---- adding -------------------------------------------------------------------------------------

    def add(self, key: str) -> None:
        if self._shut or key in self._dirty:
            return
        self._dirty.add(key)
        if self._observer is not None:
            self._observer.queue_add(self.name)
        if key not in self._processing:
            self._queue.append(key)
            self._changed()

    def add_after(self, key: str, delay: float) -> None:
        if self._shut:
            return
        if delay <= 0:
            self.add(key)
            return
        heapq.heappush(self._delayed, (self._clock() + delay, next(self._seq), key))
        self._changed()

    def add_rate_limited(self, key: str) -> float:
        """Requeue after this key's next backoff delay; returns the delay."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = self._backoff.delay(failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def requeues(self, key: str) -> int:
        return self._failures.get(key, 0)

    # ---- taking -------------------------------------------------------------------------------------

    async def get(self) -> str:
        """The next key to process; the caller must call done(key) when finished with it."""
        while True:
            if self._shut:
                raise QueueShutDown(self.name)
            wait = self._promote_due()
            if self._queue:
                key = self._queue.popleft()
                self._processing.add(key)
                self._dirty.discard(key)
                self._report()
                return key
            self._wake.clear()
            try:
                async with asyncio.timeout(wait):  # None: until something is added
                    await self._wake.wait()
            except TimeoutError:
                pass

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty and not self._shut:
            self._queue.append(key)
            self._changed()
        self._report()

    def _promote_due(self) -> float | None:
        """Move due delayed keys to the queue; the seconds until the next one is due (None: none)."""
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key = heapq.heappop(self._delayed)
            self.add(key)
        return max(0.0, self._delayed[0][0] - now) if self._delayed else None

    # ---- state --------------------------------------------------------------------------------------

    def wakeup(self) -> None:
        """Re-check delayed keys now (after a fake clock moved)."""
        self._wake.set()

    def shutdown(self) -> None:
        self._shut = True
        self._wake.set()

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def delayed(self) -> int:
        return len(self._delayed)

    @property
    def processing(self) -> frozenset[str]:
        return frozenset(self._processing)

    def _changed(self) -> None:
        self._wake.set()
        self._report()

    def _report(self) -> None:
        if self._observer is not None:
            self._observer.queue_depth(self.name, len(self._queue))
