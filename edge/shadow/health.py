"""Cloud health with hysteresis: is kube-apiserver reachable from this node?

The first probe decides at once (a node rebooting offline serves from disk right away); after that the
verdict flips to unhealthy only after `unhealthy_after` failed probes in a row and back to healthy after
`healthy_after` good ones (YurtHub's 3 and 2).

Probes start every `period`, start to start: a probe that waits for its timeout (a black-hole link) does
not push the next one back, and probes may overlap when the probe timeout is longer than the period (at
most `max_outstanding` are out; results are counted in the order the probes started). So a link that
dies is declared unreachable at most `unhealthy_after` periods + one probe timeout after it died. Each
flip awaits the listener before the next result is counted, so the proxy's switch-over (closing
watches, relisting on reconnect) finishes before the next verdict."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[bool]]
Listener = Callable[[bool], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class CloudHealth:
    def __init__(
        self,
        probe: Probe,
        *,
        period: float,
        unhealthy_after: int = 3,
        healthy_after: int = 2,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        max_outstanding: int = 4,
    ) -> None:
        self._probe = probe
        self.period = period
        self.unhealthy_after = unhealthy_after
        self.healthy_after = healthy_after
        self._sleep = sleep
        self._clock = clock
        self.max_outstanding = max(1, max_outstanding)
        self.healthy: bool | None = None  # None until the first probe
        self.failures = 0
        self.successes = 0
        self.probes = 0
        self.listeners: list[Listener] = []
        self.decided = asyncio.Event()  # set after the first verdict

    def record(self, ok: bool) -> bool | None:
        """Count one probe; the new verdict if it flipped (or was first decided), else None."""
        self.probes += 1
        if ok:
            self.successes, self.failures = self.successes + 1, 0
        else:
            self.failures, self.successes = self.failures + 1, 0
        if self.healthy is None:
            self.healthy = ok
            return ok
        if self.healthy and self.failures >= self.unhealthy_after:
            self.healthy = False
            return False
        if not self.healthy and self.successes >= self.healthy_after:
            self.healthy = True
            return True
        return None

    async def run(self) -> None:
        started: asyncio.Queue[asyncio.Task[bool]] = asyncio.Queue()
        slots = asyncio.Semaphore(self.max_outstanding)  # probes started and not yet counted
        starter = asyncio.create_task(self._start_probes(started, slots), name="shadow-probe-starter")
        try:
            while True:
                ok = await (await started.get())
                slots.release()
                await self._verdict(ok)
        finally:
            starter.cancel()
            rest: list[asyncio.Task[Any]] = [starter]
            while not started.empty():
                rest.append(started.get_nowait())
                rest[-1].cancel()
            await asyncio.gather(*rest, return_exceptions=True)

    async def _start_probes(
        self, started: asyncio.Queue[asyncio.Task[bool]], slots: asyncio.Semaphore
    ) -> None:
        """A probe every period, start to start; waits while `max_outstanding` are not counted yet."""
        due = self._clock()
        while True:
            await slots.acquire()
            started.put_nowait(asyncio.create_task(self._one(), name="shadow-probe"))
            due += self.period
            now = self._clock()
            due = max(due, now)  # late (probes backed up, or the loop was busy): no burst to catch up
            await self._sleep(due - now)

    async def _one(self) -> bool:
        try:
            return await self._probe()
        except (OSError, TimeoutError) as e:
            log.debug("shadow: probe failed: %r", e)
            return False

    async def _verdict(self, ok: bool) -> None:
        flipped = self.record(ok)
        if flipped is not None:
            log.warning("shadow: cloud is %s", "reachable" if flipped else "UNREACHABLE: serving from cache")
            for listener in self.listeners:
                await listener(flipped)
            self.decided.set()
