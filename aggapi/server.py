"""build_app(): the middleware order, the routes, and the long-running parts (watch caches) started and
stopped in exactly one place (aiohttp cleanup_ctx)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from aggapi import __version__, discovery, openapi
from aggapi.apis.registry import KINDS
from aggapi.auth.authn import Authenticator
from aggapi.auth.authz import Authorizer
from aggapi.healthz import HealthCheck
from aggapi.healthz import handler as health_handler
from aggapi.http.handlers import ResourceHandler, respond
from aggapi.http.middleware import authn_mw, authz_mw, errors_mw, metrics_mw, request_info
from aggapi.http.negotiation import content_type_for, negotiate
from aggapi.machinery import apierrors
from aggapi.metrics import Metrics
from aggapi.options import ServerOptions
from aggapi.registry.resource import ResourceDef
from aggapi.registry.store import Store
from aggapi.storage.cacher import CacheConfig, Cacher
from aggapi.storage.compactor import run_compactor
from aggapi.storage.etcd import EtcdClient, EtcdConfig
from aggapi.storage.etcdstore import EtcdStore

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


def build_app(
    opts: ServerOptions,
    *,
    authenticator: Authenticator,
    authorizer: Authorizer,
    metrics: Metrics | None = None,
    kinds: Sequence[ResourceDef] = KINDS,
    background: Sequence[Background] = (),
) -> web.Application:
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
    app.cleanup_ctx.append(lambda a: _lifecycle(a, opts, background))
    _routes(app, rt, metrics)
    return app


async def _lifecycle(
    app: web.Application, opts: ServerOptions, background: Sequence[Background]
) -> AsyncIterator[None]:
    rt, metrics = app[RUNTIME], app[METRICS]
    e = opts.etcd
    client = EtcdClient(EtcdConfig(e.servers, e.cafile or None, e.certfile or None, e.keyfile or None))
    rt.client = client
    cache_cfg = CacheConfig(capacity=opts.cache.capacity, bookmark_interval=opts.cache.bookmark_interval)
    estore = EtcdStore(client, observe=metrics.observe_etcd)
    for rdef in rt.kinds:
        prefix = f"{e.prefix.rstrip('/')}/{rdef.group}/{rdef.resource}/"
        bookmark = {"apiVersion": rdef.api_version, "kind": rdef.kind}
        cacher = Cacher(estore, prefix, bookmark_object=bookmark, config=cache_cfg)
        rt.cachers.append(cacher)
        rt.handlers[(rdef.group, rdef.version, rdef.resource)] = ResourceHandler(
            rdef, Store(rdef, cacher, prefix=e.prefix)
        )
        metrics.watch_count(rdef.resource, _counter(cacher))
        rt.tasks.append(asyncio.create_task(cacher.run(), name=f"watch-cache:{rdef.resource}"))
        rt.tasks.append(asyncio.create_task(cacher.bookmark_loop(), name=f"bookmarks:{rdef.resource}"))
    for name, loop in background:
        rt.tasks.append(asyncio.create_task(loop(), name=name))
    if e.compaction_interval > 0:
        rt.tasks.append(
            asyncio.create_task(run_compactor(client, e.compaction_interval), name="etcd-compactor")
        )
    try:
        yield
    finally:
        for t in rt.tasks:
            t.cancel()
        for t in rt.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await client.close()


def _counter(cacher: Cacher) -> Callable[[], int]:
    return lambda: cacher.watcher_count


def _routes(app: web.Application, rt: Runtime, metrics: Metrics) -> None:
    docs: dict[str, dict[str, Any]] = {}

    def doc(name: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The kinds never change while serving, so each document is built once."""
        if name not in docs:
            docs[name] = build()
        return docs[name]

    async def etcd_check() -> None:
        if rt.client is None:
            raise RuntimeError("storage not started")
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
    live = [HealthCheck("main-loops", loops_alive)]
    r = app.router
    r.add_get("/healthz", health_handler("healthz", ready))
    r.add_get("/readyz", health_handler("readyz", ready))
    r.add_get("/livez", health_handler("livez", live))

    async def version(_: web.Request) -> web.Response:
        return respond(
            {
                "major": "0",
                "minor": "1",
                "gitVersion": f"v{__version__}",
                "goVersion": f"python{platform.python_version()}",
                "platform": f"{platform.system().lower()}/{platform.machine()}",
            }
        )

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    async def core(request: web.Request) -> web.StreamResponse:
        # An aggregated server has no core group (kube-apiserver answers /api itself). Answered anyway so
        # kubectl pointed straight at aggapi works: client-go uses aggregated /apis only if /api is too.
        target = negotiate(request.headers.get("Accept", ""), allow_table=False, discovery=True)
        if target.shape == "discovery-v2":
            empty = discovery.aggregated_discovery([], discovery_version=target.version)
            return _etagged(request, empty, content_type_for(target))
        return respond({"kind": "APIVersions", "versions": [], "serverAddressByClientCIDRs": []})

    async def apis(request: web.Request) -> web.StreamResponse:
        target = negotiate(request.headers.get("Accept", ""), allow_table=False, discovery=True)
        if target.shape == "discovery-v2":
            agg = doc(
                f"agg-{target.version}",
                lambda: discovery.aggregated_discovery(rt.kinds, discovery_version=target.version),
            )
            return _etagged(request, agg, content_type_for(target))
        return _etagged(
            request, doc("groups", lambda: discovery.api_group_list(rt.kinds)), "application/json"
        )

    async def group(request: web.Request) -> web.StreamResponse:
        g = request.match_info["group"]
        if not any(k.group == g for k in rt.kinds):
            raise apierrors.StatusError(404, "NotFound", "the server could not find the requested resource")
        return respond(discovery.api_group(g, rt.kinds))

    async def group_version_or_resource(request: web.Request) -> web.StreamResponse:
        info = request_info(request)
        if not any(k.group == info.group and k.version == info.version for k in rt.kinds):
            raise apierrors.StatusError(404, "NotFound", "the server could not find the requested resource")
        if not info.resource:
            arl = doc(
                f"arl-{info.group}/{info.version}",
                lambda: discovery.api_resource_list(info.group, info.version, rt.kinds),
            )
            return _etagged(request, arl, "application/json")
        h = rt.handlers.get((info.group, info.version, info.resource))
        if h is None:
            if not rt.handlers:
                raise apierrors.service_unavailable("storage is starting")
            raise apierrors.StatusError(404, "NotFound", "the server could not find the requested resource")
        return await h.handle(request, info)

    async def openapi_v2(request: web.Request) -> web.StreamResponse:
        # Only JSON is offered; a protobuf-only Accept (kubectl's own v2 client) gets 406, not bytes
        # it cannot parse.
        negotiate(request.headers.get("Accept", ""), allow_table=False)
        return _etagged(request, doc("v2", lambda: openapi.openapi_v2(rt.kinds)), "application/json")

    async def openapi_v3(request: web.Request) -> web.StreamResponse:
        return _etagged(request, doc("v3", lambda: openapi.openapi_v3_index(rt.kinds)), "application/json")

    async def openapi_v3_gv(request: web.Request) -> web.StreamResponse:
        g, v = request.match_info["group"], request.match_info["version"]
        if not any(k.group == g and k.version == v for k in rt.kinds):
            raise apierrors.StatusError(404, "NotFound", "the server could not find the requested resource")
        gv = doc(f"v3-{g}/{v}", lambda: openapi.openapi_v3_group_version(g, v, rt.kinds))
        return _etagged(request, gv, "application/json")

    r.add_get("/version", version)
    r.add_get("/metrics", prometheus)
    r.add_get("/api", core)
    r.add_get("/apis", apis)
    r.add_get("/openapi/v2", openapi_v2)
    r.add_get("/openapi/v3", openapi_v3)
    r.add_get("/openapi/v3/apis/{group}/{version}", openapi_v3_gv)
    r.add_get("/apis/{group}", group)
    r.add_route("*", "/apis/{group}/{version}", group_version_or_resource)
    r.add_route("*", "/apis/{group}/{version}/{tail:.*}", group_version_or_resource)


def _etagged(request: web.Request, body: dict[str, Any], content_type: str) -> web.StreamResponse:
    etag = discovery.discovery_etag(body)
    headers = {"ETag": etag, "Vary": "Accept"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    resp = respond(body)
    resp.headers["Content-Type"] = content_type
    resp.headers.update(headers)
    return resp
