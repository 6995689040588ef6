"""The peer endpoint (default :10266, mutual TLS with node certs): `GET /healthz` and
`POST /probe?target=<node>` (an indirect probe: this agent probes the target for the asker).
Only clients with a node identity (CN=system:node:<n>, O=system:nodes, signed by the node CA) are
answered; others fail the handshake (no cert) or get 403 (a cert without a node identity)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from edge.health.prober import DirectProbe, Peer
from edge.health.tls import node_identity

log = logging.getLogger(__name__)

Lookup = Callable[[str], Peer | None]  # a pool member by name
Health = Callable[[], str | None]  # None when healthy, else why not

_NODE = web.RequestKey("node", str)


class PeerServer:
    def __init__(
        self,
        ctx: ssl.SSLContext,
        lookup: Lookup,
        probe: DirectProbe,
        health: Health,
        *,
        max_concurrent_probes: int = 16,
    ) -> None:
        self._ctx = ctx
        self._lookup = lookup
        self._probe = probe
        self._health = health
        self._slots = asyncio.Semaphore(max_concurrent_probes)
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None
        self.indirect_served = 0

    async def start(self, host: str, port: int) -> None:
        """Listen now (a taken port fails the caller at once)."""
        app = web.Application(middlewares=[self._only_nodes])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_post("/probe", self._probe_for_peer)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, host, port, ssl_context=self._ctx)
        try:
            await site.start()
        except BaseException:
            await self.close()
            raise
        for name in runner.addresses:
            self.address = (str(name[0]), int(name[1]))
        log.info("health agent: peer endpoint on %s:%s", host, self.address[1] if self.address else port)

    async def serve(self) -> None:
        """Keep answering until cancelled, then stop."""
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @web.middleware
    async def _only_nodes(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        transport = request.transport
        who = node_identity(transport.get_extra_info("peercert") if transport is not None else None)
        if who is None:
            return web.Response(status=403, text="forbidden: only node identities may call this\n")
        request[_NODE] = who
        return await handler(request)

    async def _healthz(self, request: web.Request) -> web.Response:
        problem = self._health()
        if problem is None:
            return web.Response(text="ok\n")
        return web.Response(status=500, text=f"unhealthy: {problem}\n")

    async def _probe_for_peer(self, request: web.Request) -> web.Response:
        target = request.query.get("target", "")
        peer = self._lookup(target)
        if peer is None:
            return web.json_response({"error": f"{target!r} is not a member of this pool"}, status=404)
        if self._slots.locked():
            return web.json_response({"error": "too many indirect probes"}, status=429)
        async with self._slots:
            result = await self._probe(peer)
        self.indirect_served += 1
        log.debug("health agent: probed %s for %s: %s", target, request[_NODE], result.ok)
        return web.json_response({"target": target, "ok": result.ok, "detail": result.detail})
