"""certificatesigningrequests/approval: kube's approval subresource, which changes only
status.conditions (Approved/Denied); spec and the issued certificate stay as stored. Nothing signs
anything here: the devcluster has no CSR signer controller."""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from aggapi.http import body as bodies
from aggapi.http.handlers import ResourceHandler, respond
from aggapi.http.requestinfo import RequestInfo
from aggapi.machinery import apierrors
from aggapi.machinery.patch import PatchError, json_patch, merge_patch
from aggapi.registry.resource import Obj


def install_approval(handler: ResourceHandler) -> None:
    store = handler.store

    async def approval(request: web.Request, info: RequestInfo) -> web.StreamResponse:
        if request.method in ("GET", "HEAD"):
            return respond(await store.get("", info.name))
        if request.method not in ("PUT", "PATCH"):
            raise apierrors.method_not_allowed(request.method, "certificatesigningrequests/approval")
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        doc: Any = bodies.parse_document(
            await bodies.read_body(request), "application/json" if request.method == "PATCH" else ctype
        )

        async def desired(current: Obj) -> Obj:
            if request.method == "PUT":
                new = doc
            else:
                try:
                    new = (
                        merge_patch(current, doc)
                        if ctype == "application/merge-patch+json"
                        else json_patch(current, doc)
                    )
                except PatchError as exc:
                    raise apierrors.StatusError(
                        422, "Invalid", f"the patch could not be applied: {exc}"
                    ) from None
            if not isinstance(new, dict):
                raise apierrors.bad_request("the body must be a CertificateSigningRequest")
            out = copy.deepcopy(current)
            rv = (new.get("metadata") or {}).get("resourceVersion")
            if rv:
                out["metadata"]["resourceVersion"] = rv
            out.setdefault("status", {})["conditions"] = (new.get("status") or {}).get("conditions") or []
            return out

        if request.method == "PATCH" and ctype not in (
            "application/merge-patch+json",
            "application/json-patch+json",
        ):
            raise apierrors.unsupported_media_type(
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json"
            )
        return respond(await store.update("", info.name, desired, subresource="status"))

    handler.subresources["approval"] = approval
