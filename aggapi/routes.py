"""URL routing: health, version, metrics, discovery, OpenAPI, and resource dispatch by group/version.
Group-versions not served locally may be handed to a `Delegate` (the devcluster's aggregator)."""

from __future__ import annotations

import platform
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from aggapi import __version__, discovery, openapi
from aggapi.healthz import HealthCheck
from aggapi.healthz import handler as health_handler
from aggapi.http.handlers import ResourceHandler, respond
from aggapi.http.middleware import request_info
from aggapi.http.negotiation import content_type_for, negotiate
from aggapi.http.requestinfo import RequestInfo
from aggapi.machinery import apierrors
from aggapi.metrics import Metrics
from aggapi.registry.resource import ResourceDef


class Delegate(Protocol):
    """Serves group-versions this server does not store itself, and contributes them to discovery."""

    def serves(self, group: str, version: str) -> bool: ...

    async def handle(self, request: web.Request, info: RequestInfo) -> web.StreamResponse: ...

    def discovery(self, aggregated_version: str) -> list[dict[str, Any]]:
        """APIGroup entries (aggregated_version "") or APIGroupDiscovery entries ("v2"/"v2beta1")."""
        ...

    def openapi_v3_paths(self) -> dict[str, Any]:
        """`/openapi/v3` index entries (e.g. "apis/<g>/<v>": {"serverRelativeURL": ...}) for the
        group-versions it serves; GETs of those URLs are handed to `handle`."""
        ...


NOT_FOUND = "the server could not find the requested resource"


def _not_found() -> apierrors.StatusError:
    return apierrors.StatusError(404, "NotFound", NOT_FOUND)


def etagged(request: web.Request, body: dict[str, Any], content_type: str) -> web.StreamResponse:
    etag = discovery.discovery_etag(body)
    headers = {"ETag": etag, "Vary": "Accept"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    resp = respond(body)
    resp.headers["Content-Type"] = content_type
    resp.headers.update(headers)
    return resp


def install(
    app: web.Application,
    kinds: list[ResourceDef],
    handlers: dict[tuple[str, str, str], ResourceHandler],
    metrics: Metrics,
    ready: list[HealthCheck],
    live: list[HealthCheck],
    delegate: Delegate | None = None,
) -> None:
    core = [k for k in kinds if k.group == ""]
    named = [k for k in kinds if k.group != ""]
    docs: dict[str, dict[str, Any]] = {}

    def doc(name: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Local kinds never change while serving, so each document is built once."""
        if name not in docs:
            docs[name] = build()
        return docs[name]

    def local(group: str, version: str) -> bool:
        return any(k.group == group and k.version == version for k in kinds)

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

    async def api_root(request: web.Request) -> web.StreamResponse:
        # kubectl talking to aggapi directly asks for /api too; client-go uses aggregated /apis only
        # when /api is aggregated as well.
        target = negotiate(request.headers.get("Accept", ""), allow_table=False, discovery=True)
        if target.shape == "discovery-v2":
            agg = doc(
                f"core-{target.version}",
                lambda: discovery.aggregated_discovery(core, discovery_version=target.version),
            )
            return etagged(request, agg, content_type_for(target))
        versions = sorted({k.version for k in core})
        return respond({"kind": "APIVersions", "versions": versions, "serverAddressByClientCIDRs": []})

    async def apis(request: web.Request) -> web.StreamResponse:
        target = negotiate(request.headers.get("Accept", ""), allow_table=False, discovery=True)
        if target.shape == "discovery-v2":
            agg = dict(
                doc(
                    f"agg-{target.version}",
                    lambda: discovery.aggregated_discovery(named, discovery_version=target.version),
                )
            )
            if delegate is not None:
                agg["items"] = [*agg["items"], *delegate.discovery(target.version)]
            return etagged(request, agg, content_type_for(target))
        groups = dict(doc("groups", lambda: discovery.api_group_list(named)))
        if delegate is not None:
            groups["groups"] = [*groups["groups"], *delegate.discovery("")]
        return etagged(request, groups, "application/json")

    async def group(request: web.Request) -> web.StreamResponse:
        g = request.match_info["group"]
        if any(k.group == g for k in named):
            return respond(doc(f"group-{g}", lambda: discovery.api_group(g, named)))
        for entry in delegate.discovery("") if delegate is not None else []:
            if entry.get("name") == g:
                return respond(entry)
        raise _not_found()

    async def dispatch(request: web.Request) -> web.StreamResponse:
        info = request_info(request)
        if not local(info.group, info.version):
            if delegate is not None and delegate.serves(info.group, info.version):
                return await delegate.handle(request, info)
            raise _not_found()
        if not info.resource:
            arl = doc(
                f"arl-{info.group}/{info.version}",
                lambda: discovery.api_resource_list(info.group, info.version, kinds),
            )
            return etagged(request, arl, "application/json")
        h = handlers.get((info.group, info.version, info.resource))
        if h is None:
            if not handlers:
                raise apierrors.service_unavailable("storage is starting")
            raise _not_found()
        return await h.handle(request, info)

    async def openapi_v2(request: web.Request) -> web.StreamResponse:
        # Only JSON is offered: a protobuf-only Accept (kubectl's v2 client) gets 406, not unparsable bytes.
        negotiate(request.headers.get("Accept", ""), allow_table=False)
        return etagged(request, doc("v2", lambda: openapi.openapi_v2(kinds)), "application/json")

    async def openapi_v3(request: web.Request) -> web.StreamResponse:
        index = doc("v3", lambda: openapi.openapi_v3_index(kinds))
        if delegate is not None:
            index = {**index, "paths": {**delegate.openapi_v3_paths(), **index["paths"]}}
        return etagged(request, index, "application/json")

    def openapi_v3_gv(prefix: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            g = request.match_info.get("group", "") if prefix == "apis" else ""
            v = request.match_info["version"]
            if not local(g, v):
                if delegate is not None and delegate.serves(g, v):
                    return await delegate.handle(request, RequestInfo(request.path, "get", False, g, v))
                raise _not_found()
            gv = doc(f"v3-{g}/{v}", lambda: openapi.openapi_v3_group_version(g, v, kinds))
            return etagged(request, gv, "application/json")

        return serve

    r.add_get("/version", version)
    r.add_get("/metrics", prometheus)
    r.add_get("/api", api_root)
    r.add_get("/apis", apis)
    r.add_get("/openapi/v2", openapi_v2)
    r.add_get("/openapi/v3", openapi_v3)
    r.add_get("/openapi/v3/api/{version}", openapi_v3_gv("api"))
    r.add_get("/openapi/v3/apis/{group}/{version}", openapi_v3_gv("apis"))
    r.add_get("/apis/{group}", group)
    r.add_route("*", "/api/{version}", dispatch)
    r.add_route("*", "/api/{version}/{tail:.*}", dispatch)
    r.add_route("*", "/apis/{group}/{version}", dispatch)
    r.add_route("*", "/apis/{group}/{version}/{tail:.*}", dispatch)
