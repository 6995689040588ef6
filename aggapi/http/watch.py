"""Watch streaming: newline-delimited watch events, each event's bytes encoded once per output shape
and shared by every watcher that receives it."""

from __future__ import annotations

import asyncio
import random
from typing import Any, Protocol

from aiohttp import web

from aggapi.http import table
from aggapi.http.negotiation import Target, content_type_for
from aggapi.http.options import encode
from aggapi.machinery import apierrors
from aggapi.registry.resource import ResourceDef
from aggapi.storage.interface import Watch, WatchEvent, WatchOptions

# kube-apiserver closes watches after --min-request-timeout (1800 s) times a random factor in [1, 2),
# which spreads client reconnects out.
MIN_REQUEST_TIMEOUT = 1800


class WatchSource(Protocol):
    async def watch(self, namespace: str, opts: WatchOptions) -> Watch: ...


def encode_event(ev: WatchEvent, rdef: ResourceDef, target: Target, include: str) -> bytes:
    key = (target.key, ev.type, include)
    cached = ev.encoded.get(key)
    if cached is not None:
        return cached
    obj: Any = ev.object
    if target.shape == "table":
        rows = [] if ev.type == "BOOKMARK" else [ev.object]
        meta = {"resourceVersion": str(ev.resource_version)}
        obj = table.table(rows, rdef.printer_columns, version=target.version, include=include, list_meta=meta)
    elif target.shape == "partial" and ev.type != "ERROR":
        obj = table.partial(ev.object, target.version)
    data = encode({"type": ev.type, "object": obj}) + b"\n"
    ev.encoded[key] = data
    return data


def error_event(err: apierrors.StatusError) -> bytes:
    return encode({"type": "ERROR", "object": err.status()}) + b"\n"


async def serve_watch(
    request: web.Request,
    source: WatchSource,
    rdef: ResourceDef,
    namespace: str,
    opts: WatchOptions,
    timeout: int,
    target: Target,
) -> web.StreamResponse:
    include = request.query.get("includeObject", "Metadata")
    resp = web.StreamResponse(status=200)
    resp.headers["Content-Type"] = content_type_for(target)
    resp.enable_chunked_encoding()
    try:
        watch = await source.watch(namespace, opts)
    except apierrors.StatusError as err:
        if err.code not in (410, 504):
            raise
        # Like kube-apiserver: a watch that cannot start from that revision is a 200 with one ERROR event.
        await resp.prepare(request)
        await resp.write(error_event(err))
        await resp.write_eof()
        return resp
    await resp.prepare(request)
    seconds = timeout if timeout > 0 else MIN_REQUEST_TIMEOUT * (1 + random.random())
    try:
        async with asyncio.timeout(seconds):
            async for ev in watch:
                await resp.write(encode_event(ev, rdef, target, include))
    except TimeoutError:
        pass
    except (ConnectionResetError, ConnectionError):
        return resp
    finally:
        watch.stop()
    await resp.write_eof()
    return resp
