"""Forwarding one request to an aggregated backend, as kube-aggregator's proxy handler does: the
client's own credentials and any identity headers it sent are dropped and the authenticated user is
asserted in X-Remote-* headers over the front-proxy mTLS connection. Responses stream through as they
arrive (watches event by event); `Connection: Upgrade` requests get the backend's 101 and then the
bytes are spliced both ways."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from aggapi.auth.authn import UserInfo
from aggapi.devcluster import rawhttp
from aggapi.devcluster.backends import CONNECT_TIMEOUT, DISCOVERY_TIMEOUT, Backend, identity_headers
from aggapi.http.requestinfo import RequestInfo
from aggapi.machinery.aio import within

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    )
)
REQUEST_TIMEOUT = 60.0  # kube-apiserver's --request-timeout for requests that are not long-running
LONG_RUNNING_SUBRESOURCES = frozenset({"proxy", "log", "exec", "attach", "portforward"})


def is_upgrade(request: web.Request) -> bool:
    tokens = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    return "upgrade" in tokens and bool(request.headers.get("Upgrade"))


def outbound_headers(request: web.Request, user: UserInfo) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop ones, its credentials, and identity or impersonation
    headers it may have sent; plus the authenticated user as the front proxy asserts it."""
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in request.headers.items():
        low = k.lower()
        if low in HOP_BY_HOP or low == "authorization" or low.startswith(("x-remote-", "impersonate-")):
            continue
        out.add(k, v)
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    out.extend(identity_headers(user))
    return out


def _timeout(info: RequestInfo, upgrade: bool) -> aiohttp.ClientTimeout:
    if upgrade or info.verb == "watch" or info.subresource in LONG_RUNNING_SUBRESOURCES:
        return aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
    if not info.is_resource and info.path.strip("/").count("/") == 2:
        # /apis/<g>/<v>: discovery must be fast (kube-aggregator's 5 s).
        return aiohttp.ClientTimeout(total=DISCOVERY_TIMEOUT, sock_connect=CONNECT_TIMEOUT)
    return aiohttp.ClientTimeout(total=REQUEST_TIMEOUT, sock_connect=CONNECT_TIMEOUT)


def unavailable(message: str) -> web.Response:
    """kube-aggregator answers proxy failures with plain text (http.Error), not a Status."""
    return web.Response(
        status=503, text=message + "\n", headers={"X-Content-Type-Options": "nosniff"}, charset="utf-8"
    )


def _copy_response_headers(src: Mapping[str, str], resp: web.StreamResponse) -> None:
    for k, v in src.items():
        if k.lower() not in HOP_BY_HOP or k.lower() == "content-length":
            resp.headers.add(k, v)


async def forward(
    request: web.Request, info: RequestInfo, backend: Backend, host: str, port: int, user: UserInfo
) -> web.StreamResponse:
    headers = outbound_headers(request, user)
    if is_upgrade(request):
        return await _upgrade(request, backend, host, port, headers)
    # The client's body is small (API objects, at most the 4 MiB the app accepts); responses stream.
    data = await request.read() if request.body_exists else None
    skip = [h for h in ("Accept", "Accept-Encoding", "User-Agent") if h not in request.headers]
    resp: web.StreamResponse | None = None
    try:
        async with backend.session().request(
            request.method,
            f"https://{host}:{port}{request.raw_path}",
            headers=headers,
            data=data,
            skip_auto_headers=skip,
            allow_redirects=False,
            timeout=_timeout(info, False),
            server_hostname=backend.spec.server_name,
        ) as up:
            resp = web.StreamResponse(status=up.status, reason=up.reason)
            _copy_response_headers(up.headers, resp)
            if "Content-Length" not in up.headers and request.method != "HEAD":
                resp.enable_chunked_encoding()
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError, TimeoutError) as exc:
        log.info("proxying %s %s to %s: %s", request.method, request.path, backend.spec.name, exc)
        if resp is not None and resp.prepared:
            return resp  # the backend went away mid-stream: the client sees the stream end
        return unavailable(f"error trying to reach service: {exc or type(exc).__name__}")


# ---- upgrades -------------------------------------------------------------------------------------


class _Spliced(web.StreamResponse):
    """The 101 response; afterwards the connection carries raw bytes."""

    _length_check = False


class _Inbound:
    """Receives the client's bytes after the upgrade (installed as the connection's payload parser)."""

    def __init__(self, transport: asyncio.Transport | None) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._transport = transport
        self._paused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.queue.put_nowait(bytes(data))
        if self.queue.qsize() > 64 and self._transport is not None and not self._paused:
            self._transport.pause_reading()
            self._paused = True
        return False, b""

    def feed_eof(self) -> None:
        self.queue.put_nowait(None)

    async def get(self) -> bytes | None:
        data = await self.queue.get()
        if self._paused and self.queue.qsize() < 8 and self._transport is not None:
            self._transport.resume_reading()
            self._paused = False
        return data


async def _upgrade(
    request: web.Request, backend: Backend, host: str, port: int, headers: CIMultiDict[str]
) -> web.StreamResponse:
    try:
        reader, writer = await within(
            asyncio.open_connection(host, port, ssl=backend.ssl, server_hostname=backend.spec.server_name),
            CONNECT_TIMEOUT,
        )
    except (OSError, TimeoutError) as exc:
        return unavailable(f"error trying to reach service: {exc or type(exc).__name__}")
    try:
        out = [*headers.items(), ("Connection", "Upgrade"), ("Upgrade", request.headers["Upgrade"])]
        head = rawhttp.request_head(request.method, request.raw_path, f"{host}:{port}", out)
        return await exchange_upgrade(request, reader, writer, head)
    except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as exc:
        return unavailable(f"error upgrading the connection: {exc or type(exc).__name__}")
    finally:
        await close_writer(writer)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1):
            await writer.wait_closed()


async def exchange_upgrade(
    request: web.Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
) -> web.StreamResponse:
    """Send an upgrade request on an open connection; relay a non-101 answer as an ordinary response,
    or the 101 and then the bytes both ways until either side closes. Network errors are raised."""
    writer.write(head)
    if request.body_exists:
        writer.write(await request.read())
    await writer.drain()
    async with asyncio.timeout(REQUEST_TIMEOUT):
        status, reason, up_headers = await rawhttp.read_head(reader)
        if status != 101:
            body = await rawhttp.read_body(reader, up_headers)
    if status != 101:
        resp = web.Response(status=status, reason=reason, body=body)
        _copy_response_headers(CIMultiDict(up_headers), resp)
        resp.headers.popall("Content-Length", None)
        return resp
    return await _splice(request, reader, writer, reason, up_headers)


async def _splice(
    request: web.Request,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    reason: str,
    up_headers: list[tuple[str, str]],
) -> web.StreamResponse:
    resp = _Spliced(status=101, reason=reason or "Switching Protocols")
    for k, v in up_headers:
        if k.lower() not in ("content-length", "transfer-encoding"):
            resp.headers.add(k, v)
    resp.force_close()
    inbound = _Inbound(request.transport)
    # Installed before the 101 goes out: the client sends nothing upgraded before it sees it.
    request.protocol.set_parser(inbound)  # type: ignore[arg-type]  # typed as WebSocketReader; duck-typed
    await resp.prepare(request)

    async def client_to_backend() -> None:
        while (data := await inbound.get()) is not None:
            writer.write(data)
            await writer.drain()

    async def backend_to_client() -> None:
        while data := await reader.read(64 * 1024):
            await resp.write(data)

    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(client_to_backend(), name="upgrade:client->backend"),
        asyncio.create_task(backend_to_client(), name="upgrade:backend->client"),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await t
    return resp
