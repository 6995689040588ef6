"""CRUD handlers for one resource, driven by its ResourceDef and generic Store."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from aggapi.http import body as bodies
from aggapi.http import options, table
from aggapi.http.negotiation import JSON, Target, content_type_for, negotiate
from aggapi.http.requestinfo import RequestInfo
from aggapi.http.watch import serve_watch
from aggapi.machinery import apierrors
from aggapi.machinery.patch import PatchError, json_patch, merge_patch
from aggapi.registry.resource import Obj, ResourceDef
from aggapi.registry.store import Store
from aggapi.storage.interface import ListResult

PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json")
UNSUPPORTED_PATCH = ("application/strategic-merge-patch+json", "application/apply-patch+yaml")

SubresourceHandler = Callable[[web.Request, RequestInfo], Awaitable[web.StreamResponse]]


def respond(
    obj: Any, *, status: int = 200, target: Target = JSON, warnings: bodies.Warnings | None = None
) -> web.Response:
    resp = web.Response(body=options.encode(obj), status=status, content_type="application/json")
    if target is not JSON:
        resp.headers["Content-Type"] = content_type_for(target)
    if warnings is not None:
        warnings.apply(resp)
    return resp


class ResourceHandler:
    def __init__(self, rdef: ResourceDef, store: Store) -> None:
        self.rdef = rdef
        self.store = store
        self.subresources: dict[str, SubresourceHandler] = {}

    async def handle(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        if self.rdef.namespaced != bool(info.namespace) and info.name == "" and info.namespace:
            raise apierrors.not_found(self.rdef.group, self.rdef.resource, "")
        if not self.rdef.namespaced and info.namespace:
            raise apierrors.not_found(self.rdef.group, self.rdef.resource, info.name)
        method = request.method
        if not info.name:
            if method in ("GET", "HEAD"):
                return await (self.watch(request, info) if info.verb == "watch" else self.list(request, info))
            if method == "POST":
                return await self.create(request, info)
            if method == "DELETE":
                return await self.delete_collection(request, info)
            raise apierrors.method_not_allowed(method, self.rdef.resource)
        if info.subresource and info.subresource != "status":
            handler = self.subresources.get(info.subresource)
            if handler is None:
                raise apierrors.not_found(
                    self.rdef.group, f"{self.rdef.resource}/{info.subresource}", info.name
                )
            return await handler(request, info)
        if info.subresource == "status" and self.rdef.status_strategy is None:
            raise apierrors.not_found(self.rdef.group, f"{self.rdef.resource}/status", info.name)
        if method in ("GET", "HEAD"):
            return await self.get(request, info)
        if method == "PUT":
            return await self.update(request, info)
        if method == "PATCH":
            return await self.patch(request, info)
        if method == "DELETE" and not info.subresource:
            return await self.delete(request, info)
        raise apierrors.method_not_allowed(method, self.rdef.resource)

    # ---- reads ------------------------------------------------------------------------------------

    async def get(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        target = negotiate(request.headers.get("Accept", ""))
        rv = options.list_options(dict(request.query), namespaced=self.rdef.namespaced).resource_version
        obj = await self.store.get(info.namespace, info.name, resource_version=rv)
        if target.shape == "table":
            include = request.query.get("includeObject", "Metadata")
            return respond(
                table.table([obj], self.rdef.printer_columns, version=target.version, include=include),
                target=target,
            )
        if target.shape == "partial":
            return respond(table.partial(obj, target.version), target=target)
        return respond(obj)

    async def list(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        target = negotiate(request.headers.get("Accept", ""))
        opts = options.list_options(dict(request.query), namespaced=self.rdef.namespaced)
        result = await self.store.list(info.namespace, opts)
        return respond(
            self.render_list(result, target, request.query.get("includeObject", "Metadata")), target=target
        )

    def render_list(self, result: ListResult, target: Target, include: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(result.resource_version)}
        if result.continue_token:
            meta["continue"] = result.continue_token
        if result.remaining is not None:
            meta["remainingItemCount"] = result.remaining
        if target.shape == "table":
            return table.table(
                result.items,
                self.rdef.printer_columns,
                version=target.version,
                include=include,
                list_meta=meta,
            )
        if target.shape == "partial":
            return table.partial_list(result.items, target.version, meta)
        return {
            "apiVersion": self.rdef.api_version,
            "kind": self.rdef.list_kind,
            "metadata": meta,
            "items": result.items,
        }

    async def watch(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        target = negotiate(request.headers.get("Accept", ""))
        opts, timeout = options.watch_options(dict(request.query), namespaced=self.rdef.namespaced)
        return await serve_watch(request, self.store, self.rdef, info.namespace, opts, timeout, target)

    # ---- writes -----------------------------------------------------------------------------------

    async def _object(self, request: web.Request, warnings: bodies.Warnings) -> Obj:
        data = await bodies.read_body(request)
        doc = bodies.parse_document(data, request.headers.get("Content-Type", ""))
        mode = bodies.field_validation(dict(request.query))
        return bodies.check_object(doc, self.rdef, mode, warnings)

    async def create(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        warnings = bodies.Warnings()
        obj = await self._object(request, warnings)
        created = await self.store.create(info.namespace, obj, dry_run=options.dry_run(dict(request.query)))
        return respond(created, status=201, warnings=warnings)

    async def update(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        warnings = bodies.Warnings()
        obj = await self._object(request, warnings)

        async def desired(_current: Obj) -> Obj:
            return copy.deepcopy(obj)

        updated = await self.store.update(
            info.namespace,
            info.name,
            desired,
            subresource=info.subresource,
            dry_run=options.dry_run(dict(request.query)),
        )
        return respond(updated, warnings=warnings)

    async def patch(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype not in PATCH_TYPES:
            what = (
                "server-side apply is not supported yet; " if ctype == "application/apply-patch+yaml" else ""
            )
            raise apierrors.unsupported_media_type(
                f'the patch content-type "{ctype}" is not supported: {what}'
                f"supported patch types: {', '.join(PATCH_TYPES)}"
            )
        data = await bodies.read_body(request)
        patch = bodies.parse_document(data, "application/json")
        mode = bodies.field_validation(dict(request.query))
        warnings = bodies.Warnings()

        async def desired(current: Obj) -> Obj:
            try:
                if ctype == "application/merge-patch+json":
                    patched = merge_patch(current, patch)
                else:
                    patched = json_patch(current, patch)
            except PatchError as exc:
                raise apierrors.StatusError(
                    422, "Invalid", f"the patch could not be applied: {exc}"
                ) from None
            return bodies.check_object(patched, self.rdef, mode, warnings)

        updated = await self.store.update(
            info.namespace,
            info.name,
            desired,
            subresource=info.subresource,
            dry_run=options.dry_run(dict(request.query)),
        )
        return respond(updated, warnings=warnings)

    async def _delete_body(self, request: web.Request) -> Any:
        data = await bodies.read_body(request)
        return bodies.parse_document(data, request.headers.get("Content-Type", "")) if data.strip() else None

    async def delete(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        pre, policy, dry = options.delete_options(dict(request.query), await self._delete_body(request))
        obj, deleted = await self.store.delete(
            info.namespace, info.name, preconditions=pre, propagation=policy, dry_run=dry
        )
        if not deleted:
            return respond(obj)
        details = {
            "name": info.name,
            "group": self.rdef.group,
            "kind": self.rdef.resource,
            "uid": obj.get("metadata", {}).get("uid", ""),
        }
        return respond(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
        )

    async def delete_collection(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        query = dict(request.query)
        _, policy, dry = options.delete_options(query, await self._delete_body(request))
        opts = options.list_options(query, namespaced=self.rdef.namespaced)
        items = await self.store.delete_collection(info.namespace, opts, propagation=policy, dry_run=dry)
        return respond(
            {"apiVersion": self.rdef.api_version, "kind": self.rdef.list_kind, "metadata": {}, "items": items}
        )
