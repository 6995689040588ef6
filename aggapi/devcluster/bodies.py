"""Request bodies aggapi's HTTP layer does not take but kube-apiserver does, for the devcluster's
stored kinds: protobuf creates and replaces (kubectl's typed clients) and strategic merge patches
(`kubectl apply` of a changed object, kubernetes-asyncio's dict patches). Installed innermost, after
authentication and authorization, and done on the kind's own Store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from aggapi.devcluster import protobuf, smp
from aggapi.http import body as bodies
from aggapi.http.handlers import respond
from aggapi.http.middleware import Handler, request_info
from aggapi.machinery import apierrors
from aggapi.registry.store import Store


def _content_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


def middleware(store_for: Callable[[str, str, str], Store | None]) -> Middleware:
    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        ctype = _content_type(request)
        wanted = (request.method in ("POST", "PUT") and ctype == protobuf.CONTENT_TYPE) or (
            request.method == "PATCH" and ctype == smp.CONTENT_TYPE
        )
        if not wanted:
            return await handler(request)
        info = request_info(request)
        store = store_for(info.group, info.version, info.resource) if info.is_resource else None
        if store is None or info.subresource not in ("", "status"):
            return await handler(request)  # the reviews decode their own; anything else gets the 415
        dry = request.query.get("dryRun") == "All"
        if request.method == "PATCH":
            patch = bodies.parse_document(await bodies.read_body(request), "application/json")

            async def patched(current: dict[str, Any]) -> dict[str, Any]:
                out: dict[str, Any] = smp.apply(current, patch)
                return out

            ns, name, sub = info.namespace, info.name, info.subresource
            return respond(await store.update(ns, name, patched, subresource=sub, dry_run=dry))
        obj = await protobuf.read_object(request)
        if request.method == "POST" and not info.name:
            return respond(await store.create(info.namespace, obj, dry_run=dry), status=201)
        if request.method == "PUT" and info.name:

            async def desired(_current: dict[str, Any]) -> dict[str, Any]:
                return obj

            ns, name, sub = info.namespace, info.name, info.subresource
            return respond(await store.update(ns, name, desired, subresource=sub, dry_run=dry))
        raise apierrors.method_not_allowed(request.method, info.resource)

    return mw
