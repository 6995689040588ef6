"""Cloud health with hysteresis: is kube-apiserver reachable from this node?

The first probe decides at once (a node rebooting offline serves from disk right away); after that the
verdict flips to unhealthy only after `unhealthy_after` failed probes in a row and back to healthy after
`healthy_after` good ones (YurtHub's 3 and 2). Each flip awaits the listener before probing on, so
the proxy's switch-over (closing watches, relisting on reconnect) finishes before the next verdict."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[bool]]
Listener = Callable[[bool], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


class CloudHealth:
    def __init__(
        self,
        probe: Probe,
        *,
        period: float,
        unhealthy_after: int = 3,
        healthy_after: int = 2,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._probe = probe
        self.period = period
        self.unhealthy_after = unhealthy_after
        self.healthy_after = healthy_after
        self._sleep = sleep
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
        while True:
            try:
                ok = await self._probe()
            except (OSError, TimeoutError) as e:
                log.debug("shadow: probe failed: %r", e)
                ok = False
            flipped = self.record(ok)
            if flipped is not None:
                log.warning(
                    "shadow: cloud is %s", "reachable" if flipped else "UNREACHABLE: serving from cache"
                )
                for listener in self.listeners:
                    await listener(flipped)
                self.decided.set()
            await self._sleep(self.period)
