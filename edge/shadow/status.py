"""kube `Status` error bodies and JSON answers, as the shadow's clients (client-go, kubectl) expect them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from edge.shadow.requestinfo import RequestInfo

JSON = "application/json"
_REASONS = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
}


def status_response(
    code: int, message: str, *, info: RequestInfo | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    details: dict[str, Any] = {}
    if info is not None and info.is_resource:
        details = {"kind": info.resource}
        if info.group:
            details["group"] = info.group
        if info.name:
            details["name"] = info.name
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, ""),
        "code": code,
    }
    if details:
        body["details"] = details
    return web.Response(status=code, body=orjson.dumps(body), content_type=JSON, headers=headers)


def not_found(info: RequestInfo) -> web.Response:
    what = f'{info.group_resource} "{info.name}"' if info.name else info.group_resource
    return status_response(
        404, f"{what} not found (the cloud is unreachable and the shadow has not cached it)", info=info
    )


def offline_refused(info: RequestInfo, why: str) -> web.Response:
    return status_response(503, f"cloud unreachable: {why} (aggapi-edge shadow)", info=info)


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type=JSON)


def accepts_json(accept: str) -> bool:
    """Does the Accept header allow a plain JSON answer (what the shadow caches and serves)?"""
    if not accept.strip():
        return True
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media in ("application/json", "application/*", "*/*") and not any(
            p.startswith("as=") for p in params
        ):
            return True
    return False


def wants_transform(accept: str) -> bool:
    """Table / PartialObjectMetadata requests (`as=` in Accept): server-side conversions."""
    return "as=" in accept
