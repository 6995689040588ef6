"""Request bodies: size limit, content types, apiVersion/kind checks, unknown-field handling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import yaml
from aiohttp import web

from aggapi.machinery import apierrors
from aggapi.registry.resource import ResourceDef
from aggapi.registry.schema import prune

MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's --max-request-body-bytes default


@dataclass(slots=True)
class Warnings:
    """Collected `Warning:` headers (RFC 7234 299 format, as kube-apiserver sends them)."""

    messages: list[str] = field(default_factory=list)

    def add(self, msg: str) -> None:
        if msg not in self.messages:
            self.messages.append(msg)

    def apply(self, resp: web.StreamResponse) -> None:
        for m in self.messages:
            resp.headers.add("Warning", '299 - "' + m.replace("\\", "\\\\").replace('"', '\\"') + '"')


async def read_body(request: web.Request, limit: int = MAX_BODY) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise apierrors.too_large(f"the request body is larger than the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise apierrors.too_large(f"the request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_document(data: bytes, content_type: str) -> Any:
    ctype = content_type.split(";", maxsplit=1)[0].strip().lower()
    if ctype in ("", "application/json", "*/*"):
        try:
            return orjson.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise apierrors.bad_request(f"couldn't decode the request body as JSON: {exc}") from None
    if ctype in ("application/yaml", "application/x-yaml", "text/yaml"):
        try:
            return yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise apierrors.bad_request(f"couldn't decode the request body as YAML: {exc}") from None
    raise apierrors.unsupported_media_type(
        f'the body of the request was in an unknown format "{ctype}" - accepted media types include: '
        "application/json, application/yaml"
    )


def check_object(obj: Any, rdef: ResourceDef, mode: str, warnings: Warnings) -> dict[str, Any]:
    """The body must be a <kind> of our group/version; unknown fields are pruned, warned about or refused."""
    if not isinstance(obj, dict):
        raise apierrors.bad_request("the request body must be a JSON object")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not api_version or not kind:
        raise apierrors.bad_request(
            "Object 'Kind' is missing in the request body"
            if not kind
            else "Object 'apiVersion' is missing in the request body"
        )
    if api_version != rdef.api_version:
        raise apierrors.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version "
            f"({rdef.api_version})"
        )
    if kind != rdef.kind:
        raise apierrors.bad_request(
            f"the kind in the data ({kind}) does not match the expected kind ({rdef.kind}) for "
            f"{rdef.resource}.{rdef.group}"
        )
    unknown = prune(obj, rdef.schema)
    if unknown and mode == "Strict":
        detail = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise apierrors.bad_request(f"strict decoding error: {detail}")
    if unknown and mode == "Warn":
        for u in unknown:
            warnings.add(f'unknown field "{u}"')
    return obj
