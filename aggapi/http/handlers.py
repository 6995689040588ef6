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

# kube's answer for a path that matches no route (genericapiserver's NotFound handler).
NO_ROUTE = apierrors.StatusError(404, "NotFound", "the server could not find the requested resource")

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

    def add_subresource(self, name: str, handler: SubresourceHandler) -> None:
        """Serve `<resource>/<name>/<sub>[/...]` with `handler` (any method; the handler decides). The
        ResourceDef must declare it in extra_subresources, so discovery and OpenAPI show it."""
        if name not in self.rdef.extra_subresources:
            raise ValueError(f"{self.rdef.resource}/{name} is not declared in extra_subresources")
        self.subresources[name] = handler

    async def handle(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        # Like kube, a path whose scope does not fit the kind is no route at all (the generic 404);
        # only list and watch of a namespaced kind may leave the namespace out (all namespaces).
        # (/api/v1/namespaces/<name> names the Namespace itself: its "namespace" is its own name.)
        if info.namespace and not self.rdef.namespaced and info.resource != "namespaces":
            raise NO_ROUTE
        if self.rdef.namespaced and not info.namespace and (info.name or info.verb not in ("list", "watch")):
            raise NO_ROUTE
        method = request.method
        if not info.subresource and info.verb not in self.rdef.verbs:
            # e.g. writes to a read-only kind: kube's 405 MethodNotAllowed Status.
            raise apierrors.method_not_allowed(method, self.rdef.resource)
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
        rv = options.list_options(
            dict(request.query), namespaced=self.rdef.namespaced, selectable=self.rdef.selectable_fields
        ).resource_version
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
        opts = options.list_options(
            dict(request.query), namespaced=self.rdef.namespaced, selectable=self.rdef.selectable_fields
        )
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
        opts, timeout = options.watch_options(
            dict(request.query), namespaced=self.rdef.namespaced, selectable=self.rdef.selectable_fields
        )
        return await serve_watch(request, self.store, self.rdef, info.namespace, opts, timeout, target)

    # ---- writes -----------------------------------------------------------------------------------

    async def _object(
        self, request: web.Request, options_kind: str, warnings: bodies.Warnings
    ) -> tuple[Obj, bool]:
        """The request body as an object of this kind, and dryRun; in kube's order: body size (413),
        options (422), decoding (415/400), then type and unknown-field checks (400)."""
        data = await bodies.read_body(request)
        dry, mode = options.write_options(request.query, options_kind)
        doc = bodies.parse_document(data, request.headers.get("Content-Type", ""))
        return bodies.check_object(doc, self.rdef, mode, warnings), dry

    async def create(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        warnings = bodies.Warnings()
        obj, dry = await self._object(request, "CreateOptions", warnings)
        created = await self.store.create(info.namespace, obj, dry_run=dry)
        return respond(created, status=201, warnings=warnings)

    async def update(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        warnings = bodies.Warnings()
        obj, dry = await self._object(request, "UpdateOptions", warnings)

        async def desired(_current: Obj) -> Obj:
            return copy.deepcopy(obj)

        updated = await self.store.update(
            info.namespace, info.name, desired, subresource=info.subresource, dry_run=dry
        )
        return respond(updated, warnings=warnings)

    async def patch(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype not in PATCH_TYPES:
            # kube's negotiation.NewUnsupportedMediaTypeError wording, listing what this server takes.
            raise apierrors.unsupported_media_type(
                "the body of the request was in an unknown format - accepted media types include: "
                + ", ".join(PATCH_TYPES)
            )
        data = await bodies.read_body(request)
        dry, mode = options.write_options(request.query, "PatchOptions")
        patch = bodies.parse_document(data, "application/json")
        if ctype == "application/json-patch+json" and (
            not isinstance(patch, list) or not all(isinstance(op, dict) for op in patch)
        ):
            # A patch that does not decode is a 400; one that decodes but does not apply is a 422.
            raise apierrors.bad_request("a JSON patch must be a JSON array of operation objects")
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
            info.namespace, info.name, desired, subresource=info.subresource, dry_run=dry
        )
        return respond(updated, warnings=warnings)

    async def _delete_body(self, request: web.Request) -> Any:
        data = await bodies.read_body(request)
        return bodies.parse_document(data, request.headers.get("Content-Type", "")) if data.strip() else None

    async def delete(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        pre, policy, dry = options.delete_options(request.query, await self._delete_body(request))
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
        _, policy, dry = options.delete_options(request.query, await self._delete_body(request))
        opts = options.list_options(
            dict(request.query), namespaced=self.rdef.namespaced, selectable=self.rdef.selectable_fields
        )
        items = await self.store.delete_collection(info.namespace, opts, propagation=policy, dry_run=dry)
        return respond(
            {"apiVersion": self.rdef.api_version, "kind": self.rdef.list_kind, "metadata": {}, "items": items}
        )
