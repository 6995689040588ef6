"""The shadow-apiserver process: loads the disk cache, serves the proxy on the HTTP and HTTPS ports and
/healthz /readyz /metrics on the health port, probes the cloud, and switches between remote and local.

Entry points: `run_shadow(cfg, filters)` (until cancelled) or `Shadow(cfg, filters)` with
`start()`/`stop()` for callers that want the bound ports (port 0 = any free port).

Filters: either `cfg.filters` (a FiltersConfig: the shadow builds them and, for servicetopology, runs a
TopologyFeeder that reads Services, this Node and NodePools through the shadow's own cache, reader.py)
or a sequence given by the caller (who then feeds their topology itself)."""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
from collections.abc import Sequence

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from edge.shadow.cache import Cache
from edge.shadow.config import ShadowConfig
from edge.shadow.disk import DiskStore
from edge.shadow.filters import ObjectFilter, TopologyFeeder, TopologyIndex, build_filters
from edge.shadow.filters.config import SERVICE_TOPOLOGY
from edge.shadow.health import CloudHealth, Sleep
from edge.shadow.local import Local
from edge.shadow.metrics import ShadowMetrics
from edge.shadow.proxy import Proxy
from edge.shadow.reader import ShadowReader
from edge.shadow.reconcile import PendingWrites, Reconnector
from edge.shadow.remote import Upstream

log = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024  # kube-apiserver takes up to 3 MiB objects


class Shadow:
    def __init__(
        self, cfg: ShadowConfig, filters: Sequence[ObjectFilter] = (), *, sleep: Sleep = asyncio.sleep
    ) -> None:
        errors = cfg.validate()
        if errors:
            raise ValueError("; ".join(errors))
        self.cfg = cfg
        self.topology: TopologyIndex | None = None
        if cfg.filters is not None:
            if filters:
                raise ValueError("give the filters either as cfg.filters or as an argument, not both")
            self.topology = TopologyIndex()
            filters = build_filters(cfg.filters, self.topology)
        self.store = DiskStore(cfg.cache_dir, fsync=cfg.fsync)
        self.cache = Cache(self.store, cfg.components)
        self.metrics = ShadowMetrics(lambda: len(self.cache.objects))
        self.upstream = Upstream(cfg)
        self.pending = PendingWrites(self.store, {})
        self.local = Local(self.cache, self.pending, cfg.node_name, filters, cfg.bookmark_interval)
        self.health = CloudHealth(
            self.upstream.probe,
            period=cfg.probe_period,
            unhealthy_after=cfg.unhealthy_after,
            healthy_after=cfg.healthy_after,
            sleep=sleep,
        )
        self.proxy = Proxy(
            cfg, self.cache, self.upstream, self.local, self.metrics, filters, self.health.decided
        )
        self.reconnector = Reconnector(
            self.cache,
            self.upstream,
            self.local,
            self.pending,
            cfg.node_name,
            self.metrics,
            cfg.request_timeout,
        )
        self.feeder: TopologyFeeder | None = None
        if cfg.filters is not None and SERVICE_TOPOLOGY in cfg.filters.enabled and self.topology is not None:
            self.feeder = TopologyFeeder(
                ShadowReader(self.proxy), self.topology, own_node=cfg.node_name, sleep=sleep
            )
            if not self.cache.caches("aggapi-edge"):
                log.warning(
                    "shadow: --cache-agents leaves out aggapi-edge: servicetopology will not know Services, "
                    "this Node and NodePools while offline after a restart"
                )
        self.health.listeners.append(self._on_health)
        self.ports: dict[str, int] = {}
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._was_online = False

    # ---- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        loaded = await self.cache.load()
        self.pending.restore(self.cache.pending_raw)
        log.info(
            "shadow: cache %s loaded: %d objects, %d list views "
            "(%d interrupted writes removed, %d files quarantined)",
            self.cfg.cache_dir,
            len(self.cache.objects),
            len(self.cache.views),
            loaded.removed_tmp,
            loaded.quarantined,
        )
        await self.upstream.start()
        try:
            await self._serve()
        except BaseException:
            await self.stop()
            raise
        self._tasks = [
            asyncio.create_task(self.health.run(), name="shadow-cloud-health"),
            asyncio.create_task(self._watch_certs(), name="shadow-cert-reload"),
        ]
        if self.feeder is not None:  # /readyz does not wait for it: filters fail open until it knows
            self._tasks.append(asyncio.create_task(self.feeder.run(), name="shadow-topology-feeder"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.proxy.close_watches()
        for r in self._runners:
            await r.cleanup()
        self._runners = []
        await self.upstream.close()
        self.store.close()

    async def run(self) -> None:
        """Serve until cancelled."""
        await self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.stop()

    async def _serve(self) -> None:
        cfg = self.cfg
        sites: list[tuple[str, str, int, ssl.SSLContext | None, web.Application]] = [
            ("http", cfg.bind_address, cfg.port, None, self._proxy_app(secure=False))
        ]
        if cfg.secure_port and cfg.tls_cert_file and cfg.tls_private_key_file:
            serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            serving.load_cert_chain(str(cfg.tls_cert_file), str(cfg.tls_private_key_file))
            https = ("https", cfg.secure_address, cfg.secure_port, serving, self._proxy_app(secure=True))
            sites.append(https)
            if unserved := cfg.advertised_unserved():
                log.error("shadow: %s", unserved)
        if cfg.health_port:
            sites.append(("health", cfg.bind_address, cfg.health_port, None, self._health_app()))
        for name, address, port, ctx, app in sites:
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
            await runner.setup()
            self._runners.append(runner)
            site = web.TCPSite(runner, address, port, ssl_context=ctx)
            try:
                await site.start()
            except OSError as e:
                raise OSError(e.errno, _bind_error(cfg, name, address, port, e)) from e
            self.ports[name] = int(runner.addresses[0][1])
            log.info("shadow: serving %s on %s:%d", name, address, self.ports[name])

    def _proxy_app(self, *, secure: bool) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self.proxy.handle_secure if secure else self.proxy.handle)
        return app

    def _health_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    # ---- health, metrics --------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        if not self.cache.loaded:
            return web.Response(status=503, text="cache not loaded\n")
        if not self.health.decided.is_set():
            return web.Response(status=503, text="cloud health not probed yet\n")
        mode = "online" if self.proxy.online else "offline (serving from cache)"
        return web.Response(text=f"ok: {mode}\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        encode, ctype = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.metrics.registry), headers={"Content-Type": ctype})

    # ---- switching --------------------------------------------------------------------------------

    async def _on_health(self, healthy: bool) -> None:
        if not healthy:
            self.proxy.set_online(False)
            self._was_online = False
            return
        # Back (or first up): relist cached views, send offline watches what changed and close them, go
        # remote at once (no await in between: no watch registers offline once online), then push the
        # writes accepted offline (docs/shadow.md, "Reconnect").
        await self.reconnector.run(go_online=lambda: self.proxy.set_online(True))
        self.metrics.reconnects.inc()
        self._was_online = True

    async def _watch_certs(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.cert_check_interval)
            if self.upstream.reload_if_changed():
                self.metrics.cert_reloads.inc()


def _bind_error(cfg: ShadowConfig, name: str, address: str, port: int, e: OSError) -> str:
    why = f"cannot listen on {address}:{port} for the {name} port: {e.strerror or e}"
    ms = cfg.masterservice
    if name != "https" or e.errno != errno.EADDRNOTAVAIL:
        return why
    if ms is not None and address == ms.master_host:
        return (
            f"{why}. The masterservice filter points pods at {address}:{ms.master_port}, so the address must "
            f"exist on this host: create it (`ip link add yurthub-dummy0 type dummy; ip addr add "
            f"{address}/32 dev yurthub-dummy0; ip link set yurthub-dummy0 up`), or set "
            f"--secure-bind-address and --master-service-host to an address of this node that pods reach"
        )
    return f"{why}. Set --secure-bind-address to an address of this host"


async def run_shadow(cfg: ShadowConfig, filters: Sequence[ObjectFilter] = ()) -> None:
    """Run a shadow-apiserver in this event loop until cancelled."""
    await Shadow(cfg, filters).run()
