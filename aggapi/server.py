"""build_app(): the middleware order, the routes, and the long-running parts (watch caches) started and
stopped in exactly one place (aiohttp cleanup_ctx)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from aggapi import routes
from aggapi.apis.registry import KINDS, VIRTUAL
from aggapi.auth.authn import Authenticator
from aggapi.auth.authz import Authorizer
from aggapi.edge_api.memstore import MemoryView, MemoryViewConfig
from aggapi.healthz import HealthCheck
from aggapi.http.handlers import ResourceHandler, SubresourceHandler
from aggapi.http.middleware import authn_mw, authz_mw, errors_mw, metrics_mw
from aggapi.metrics import Metrics
from aggapi.options import ServerOptions
from aggapi.registry.resource import AdmitDelete, ResourceDef
from aggapi.registry.store import Store
from aggapi.routes import Delegate
from aggapi.storage.cacher import CacheConfig, Cacher
from aggapi.storage.compactor import run_compactor
from aggapi.storage.etcd import EtcdClient, EtcdConfig
from aggapi.storage.etcdstore import EtcdStore
from aggapi.storage.interface import Storage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Runtime:
    """What the routes need at request time; filled in by the storage cleanup context."""

    kinds: Sequence[ResourceDef]
    handlers: dict[tuple[str, str, str], ResourceHandler] = field(default_factory=dict)
    cachers: list[Cacher] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    client: EtcdClient | None = None


RUNTIME = web.AppKey("runtime", Runtime)
METRICS = web.AppKey("metrics", Metrics)


# A named long-running loop that the server starts with storage and cancels on shutdown.
Background = tuple[str, Callable[[], Coroutine[Any, Any, None]]]


class ViewStorage(Storage, Protocol):
    """Storage of a kind computed in memory (not in etcd); its watches end on shutdown."""

    def close_watchers(self) -> None: ...

    @property
    def watcher_count(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Extensions:
    """What the edge parts add to the generic server: storage for virtual kinds (by resource), handlers
    of extra subresources (by (resource, subresource)), and readiness checks."""

    views: Mapping[str, ViewStorage] = field(default_factory=dict)
    subresources: Mapping[tuple[str, str], SubresourceHandler] = field(default_factory=dict)
    ready_checks: Sequence[HealthCheck] = ()
    on_shutdown: Sequence[Callable[[], None]] = ()  # end long-lived streams (proxied logs -f, exec)
    delete_admission: Mapping[str, AdmitDelete] = field(default_factory=dict)  # by resource
    # Told the Stores (by resource) once they exist, before the background loops start: controllers
    # read and write aggapi's own objects through them, not through HTTP.
    store_users: Sequence[Callable[[Mapping[str, Store]], None]] = ()

    def merged(self, other: Extensions) -> Extensions:
        return Extensions(
            views={**self.views, **other.views},
            subresources={**self.subresources, **other.subresources},
            ready_checks=(*self.ready_checks, *other.ready_checks),
            on_shutdown=(*self.on_shutdown, *other.on_shutdown),
            delete_admission={**self.delete_admission, **other.delete_admission},
            store_users=(*self.store_users, *other.store_users),
        )


def build_app(
    opts: ServerOptions,
    *,
    authenticator: Authenticator,
    authorizer: Authorizer,
    metrics: Metrics | None = None,
    kinds: Sequence[ResourceDef] = KINDS,
    background: Sequence[Background] = (),
    delegate: Delegate | None = None,
    extensions: Extensions | None = None,
) -> web.Application:
    ext = extensions or Extensions()
    views = dict(ext.views)
    for rdef in kinds:  # a virtual kind nobody feeds is served empty, never from etcd
        if rdef.resource in VIRTUAL and rdef.resource not in views:
            views[rdef.resource] = MemoryView(
                MemoryViewConfig({"apiVersion": rdef.api_version, "kind": rdef.kind})
            )
    metrics = metrics or Metrics()
    app = web.Application(
        middlewares=[
            metrics_mw(metrics),
            errors_mw,
            authn_mw(authenticator, opts.authn.always_allow_paths),
            authz_mw(authorizer, opts.authn.always_allow_paths),
        ],
        client_max_size=4 * 1024 * 1024,
    )
    rt = Runtime(kinds)
    app[RUNTIME] = rt
    app[METRICS] = metrics
    app.cleanup_ctx.append(lambda a: _lifecycle(a, opts, background, views, ext))
    app.on_shutdown.append(lambda a: _end_watches(a[RUNTIME], views.values(), ext.on_shutdown))
    ready, live = _checks(rt)
    ready += ext.ready_checks
    routes.install(app, list(kinds), rt.handlers, metrics, ready, live, delegate)
    return app


async def _lifecycle(
    app: web.Application,
    opts: ServerOptions,
    background: Sequence[Background],
    views: Mapping[str, ViewStorage],
    ext: Extensions,
) -> AsyncIterator[None]:
    rt, metrics = app[RUNTIME], app[METRICS]
    e = opts.etcd
    client = EtcdClient(EtcdConfig(e.servers, e.cafile or None, e.certfile or None, e.keyfile or None))
    rt.client = client
    cache_cfg = CacheConfig(capacity=opts.cache.capacity, bookmark_interval=opts.cache.bookmark_interval)
    estore = EtcdStore(client, observe=metrics.observe_etcd)
    for rdef in rt.kinds:
        view = views.get(rdef.resource)
        if view is not None:
            rt.handlers[(rdef.group, rdef.version, rdef.resource)] = ResourceHandler(
                rdef, Store(rdef, view, prefix=e.prefix)
            )
            metrics.watch_count(rdef.resource, _counter(view))
            continue
        prefix = f"{e.prefix.rstrip('/')}/{rdef.group}/{rdef.resource}/"
        bookmark = {"apiVersion": rdef.api_version, "kind": rdef.kind}
        cacher = Cacher(estore, prefix, bookmark_object=bookmark, config=cache_cfg)
        rt.cachers.append(cacher)
        store = Store(rdef, cacher, prefix=e.prefix, admit_delete=ext.delete_admission.get(rdef.resource))
        rt.handlers[(rdef.group, rdef.version, rdef.resource)] = ResourceHandler(rdef, store)
        metrics.watch_count(rdef.resource, _counter(cacher))
        rt.tasks.append(asyncio.create_task(cacher.run(), name=f"watch-cache:{rdef.resource}"))
        rt.tasks.append(asyncio.create_task(cacher.bookmark_loop(), name=f"bookmarks:{rdef.resource}"))
    for (resource, sub), handler in ext.subresources.items():
        for rdef in rt.kinds:
            if rdef.resource == resource:
                rt.handlers[(rdef.group, rdef.version, rdef.resource)].add_subresource(sub, handler)
    stores = {h.rdef.resource: h.store for h in rt.handlers.values()}
    for use in ext.store_users:
        use(stores)
    for name, loop in background:
        rt.tasks.append(asyncio.create_task(_logged(name, loop), name=name))
    if e.compaction_interval > 0:
        rt.tasks.append(
            asyncio.create_task(run_compactor(client, e.compaction_interval), name="etcd-compactor")
        )
    try:
        yield
    finally:
        for t in rt.tasks:
            t.cancel()
        # A loop that already failed was logged by _logged; its exception must not abort the shutdown.
        await asyncio.gather(*rt.tasks, return_exceptions=True)
        await client.close()


async def _logged(name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a background loop; if it fails, say so at once (/livez reports it as stopped too)."""
    try:
        await loop()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background loop %s failed", name)
        raise
    log.error("background loop %s returned; it should run until shutdown", name)


async def _end_watches(
    rt: Runtime, views: Iterable[ViewStorage], others: Iterable[Callable[[], None]]
) -> None:
    # Open watches and streams would otherwise hold the graceful shutdown until its timeout.
    for c in rt.cachers:
        c.close_watchers()
    for v in views:
        v.close_watchers()
    for end in others:
        end()


def _counter(cacher: Cacher | ViewStorage) -> Callable[[], int]:
    return lambda: cacher.watcher_count


def _checks(rt: Runtime) -> tuple[list[HealthCheck], list[HealthCheck]]:
    async def etcd_check() -> None:
        if rt.client is None:
            raise RuntimeError("storage not started")
        async with asyncio.timeout(2):  # answer the probe before its own timeout, even if etcd hangs
            await rt.client.current_revision()

    async def caches_synced() -> None:
        pending = [c.prefix for c in rt.cachers if not c.synced.is_set()]
        if pending or not rt.cachers:
            raise RuntimeError(f"watch caches not synced: {pending}")

    async def loops_alive() -> None:
        dead = [t.get_name() for t in rt.tasks if t.done()]
        if dead:
            raise RuntimeError(f"loops stopped: {dead}")

    ready = [HealthCheck("etcd", etcd_check), HealthCheck("watch-caches-synced", caches_synced)]
    return ready, [HealthCheck("main-loops", loops_alive)]
