"""/healthz, /livez and /readyz in kube-apiserver's format ("[+]check ok" lines, ?verbose, ?exclude)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]  # raises on failure


@dataclass(frozen=True, slots=True)
class HealthCheck:
    name: str
    check: Check


def handler(
    kind: str, checks: Sequence[HealthCheck], timeout: float = 5.0
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        excluded = set(request.query.getall("exclude", []))
        lines, failed = ["[+]ping ok"], False
        for c in checks:
            if c.name in excluded:
                lines.append(f"[+]{c.name} excluded: ok")
                continue
            try:
                async with asyncio.timeout(timeout):
                    await c.check()
                lines.append(f"[+]{c.name} ok")
            except Exception as exc:  # a health check reports every failure, whatever its type
                failed = True
                log.warning("%s check %s failed: %s", kind, c.name, exc)
                lines.append(f"[-]{c.name} failed: reason withheld")
        verbose = "verbose" in request.query
        if failed:
            return web.Response(status=500, text="\n".join(lines) + f"\n{kind} check failed\n")
        return web.Response(text="\n".join(lines) + f"\n{kind} check passed\n" if verbose else "ok")

    return serve
