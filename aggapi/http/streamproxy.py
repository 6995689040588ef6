"""Forward one HTTP request over an already connected byte stream (HTTP/1.1), streaming both ways.

Generic: the caller opens the connection (TCP, TLS, a tunnel) and hands over its (reader, writer); this
module writes the request, streams the request body while the response head is awaited, and then
- streams the response body chunk by chunk as it arrives (chunked, Content-Length, or until EOF), so
  `containerLogs?follow=true` or a watch reaches the client line by line;
- after a `101 Switching Protocols` answering an upgrade request (WebSocket, SPDY/3.1, ...) relays the
  101 and then splices raw bytes both ways until either side closes.

One request per connection (`Connection: close` upstream), so the response ends at EOF at the latest.
Hop-by-hop headers are dropped both ways (RFC 9110 §7.6.1, including those the Connection header names),
and the client's credentials and identity assertions (Authorization, Proxy-Authorization, Impersonate-*,
X-Remote-*) are never forwarded: the caller authenticates to the upstream itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from multidict import CIMultiDict

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "host",
        "content-length",
        "expect",
    }
)
_CREDENTIALS = ("authorization", "proxy-authorization")
_IDENTITY_PREFIXES = ("impersonate-", "x-remote-")
_NO_BODY = frozenset({204, 304})


class UpstreamError(Exception):
    """The upstream failed before any response went to the client (answer it as a 502/503)."""


@dataclass(frozen=True, slots=True)
class StreamProxyConfig:
    head_timeout: float = 60.0  # from sending the request to the end of the response head
    max_head_bytes: int = 64 * 1024
    chunk_size: int = 64 * 1024
    upgrade_read_high_water: int = 1 << 20  # client bytes buffered before its socket is paused


def is_upgrade(request: web.Request) -> bool:
    tokens = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    return "upgrade" in tokens and bool(request.headers.get("Upgrade"))


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    return {t.strip().lower() for k, v in headers if k.lower() == "connection" for t in v.split(",")}


def outbound_headers(request: web.Request) -> CIMultiDict[str]:
    """The client's end-to-end headers minus credentials and identity headers, plus X-Forwarded-For."""
    listed = _connection_tokens(request.headers.items())
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in request.headers.items():
        low = k.lower()
        if low in HOP_BY_HOP or low in listed or low in _CREDENTIALS or low.startswith(_IDENTITY_PREFIXES):
            continue
        out.add(k, v)
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    return out


def _response_headers(headers: list[tuple[str, str]], *, keep_upgrade: bool) -> CIMultiDict[str]:
    listed = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in headers:
        low = k.lower()
        kept = keep_upgrade and low in ("connection", "upgrade")
        if kept or (low not in HOP_BY_HOP and low not in listed):
            out.add(k, v)
    return out


async def forward(
    request: web.Request,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    target: str,
    host: str,
    headers: CIMultiDict[str] | None = None,
    config: StreamProxyConfig | None = None,
) -> web.StreamResponse:
    """Send `request` as `<method> <target>` to the connected upstream and relay its answer.

    `headers` defaults to outbound_headers(request). Raises UpstreamError if the upstream fails before a
    response head arrived; once the response has started, a failure just ends the client's stream. The
    caller closes the connection afterwards."""
    cfg = config or StreamProxyConfig()
    hdrs = outbound_headers(request) if headers is None else headers
    upgrade = is_upgrade(request)
    head = [f"{request.method} {target} HTTP/1.1", f"Host: {host}"]
    head += [f"{k}: {v}" for k, v in hdrs.items()]
    if upgrade:
        head += ["Connection: Upgrade", f"Upgrade: {request.headers['Upgrade']}"]
    else:
        head.append("Connection: close")
    length = request.content_length
    chunked = not upgrade and length is None and request.body_exists
    if not upgrade and length is not None:
        head.append(f"Content-Length: {length}")
    elif chunked:
        head.append("Transfer-Encoding: chunked")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    body = (
        asyncio.create_task(_send_body(request, writer, chunked, cfg.chunk_size), name="streamproxy:body")
        if not upgrade and request.body_exists
        else None
    )
    try:
        try:
            async with asyncio.timeout(cfg.head_timeout):
                await writer.drain()
                status, reason, up_headers = await _read_head(reader, cfg.max_head_bytes)
                while 100 <= status < 200 and status != 101:  # interim answers (100 Continue): not ours
                    status, reason, up_headers = await _read_head(reader, cfg.max_head_bytes)
        except TimeoutError:
            raise UpstreamError(f"no response within {cfg.head_timeout:g}s") from None
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise UpstreamError(f"reading the response: {exc or type(exc).__name__}") from exc
        if upgrade and status == 101:
            return await _splice(request, reader, writer, reason, up_headers, cfg)
        return await _relay(request, reader, status, reason, up_headers, cfg)
    finally:
        if body is not None:
            body.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await body


async def _send_body(request: web.Request, writer: asyncio.StreamWriter, chunked: bool, size: int) -> None:
    async for data in request.content.iter_chunked(size):
        if not data:
            continue
        writer.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def _read_head(reader: asyncio.StreamReader, limit: int) -> tuple[int, str, list[tuple[str, str]]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    if len(raw) > limit:
        raise ValueError("response head too large")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"malformed response header line {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
    return int(parts[1]), (parts[2] if len(parts) > 2 else ""), headers


async def _relay(
    request: web.Request,
    reader: asyncio.StreamReader,
    status: int,
    reason: str,
    up_headers: list[tuple[str, str]],
    cfg: StreamProxyConfig,
) -> web.StreamResponse:
    fields = CIMultiDict(up_headers)
    resp = web.StreamResponse(
        status=status, reason=reason or None, headers=_response_headers(up_headers, keep_upgrade=False)
    )
    no_body = request.method == "HEAD" or status in _NO_BODY or 100 <= status < 200
    te = fields.get("Transfer-Encoding", "").lower()
    length = None if "chunked" in te else fields.get("Content-Length")
    if no_body:
        if length is not None and length.isdigit():
            resp.headers["Content-Length"] = length  # HEAD: what a GET would have carried
        await resp.prepare(request)
        await resp.write_eof()
        return resp
    if length is not None and length.isdigit():
        resp.content_length = int(length)
    else:
        resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        if "chunked" in te:
            await _copy_chunked(reader, resp)
        elif length is not None and length.isdigit():
            await _copy_exact(reader, resp, int(length), cfg.chunk_size)
        else:
            while data := await reader.read(cfg.chunk_size):
                await resp.write(data)
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        # Either side broke mid-body: the client sees its stream end early (no last chunk, or short).
        log.info("proxying %s %s: the stream ended early: %s", request.method, request.path, exc)
        if request.transport is not None:
            request.transport.close()
        return resp
    await resp.write_eof()
    return resp


async def _copy_exact(reader: asyncio.StreamReader, resp: web.StreamResponse, n: int, size: int) -> None:
    while n > 0:
        data = await reader.read(min(size, n))
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        n -= len(data)
        await resp.write(data)


async def _copy_chunked(reader: asyncio.StreamReader, resp: web.StreamResponse) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0].strip() or b"x", 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers: not relayed
            return
        await resp.write(await reader.readexactly(size))  # one upstream chunk, flushed as it came
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("malformed chunk")


# ---- upgrades -------------------------------------------------------------------------------------


class _UpgradedResponse(web.StreamResponse):
    """The 101; afterwards the connection carries the new protocol's bytes, unframed."""

    _length_check = False


class _Inbound:
    """The client's bytes after the upgrade, handed over by aiohttp's protocol once this is installed as
    the request's payload parser (as aiohttp's own WebSocketResponse does): aiohttp's parser switches to
    "upgraded" only for websocket/tcp and would read SPDY frames as HTTP requests otherwise."""

    def __init__(self, transport: asyncio.Transport | None, high_water: int) -> None:
        self._transport = transport
        self._high = high_water
        self._buf = bytearray()
        self._eof = False
        self._ready = asyncio.Event()
        self._paused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._buf += data
        self._ready.set()
        if len(self._buf) > self._high and not self._paused and self._transport is not None:
            self._paused = True  # backpressure: stop reading the client until the upstream took this
            self._transport.pause_reading()
        return False, b""

    def feed_eof(self) -> None:
        self._eof = True
        self._ready.set()

    async def read(self) -> bytes:
        while not self._buf and not self._eof:
            self._ready.clear()
            await self._ready.wait()
        data = bytes(self._buf)
        self._buf.clear()
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data


async def _splice(
    request: web.Request,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    reason: str,
    up_headers: list[tuple[str, str]],
    cfg: StreamProxyConfig,
) -> web.StreamResponse:
    resp = _UpgradedResponse(
        status=101,
        reason=reason or "Switching Protocols",
        headers=_response_headers(up_headers, keep_upgrade=True),
    )
    resp.force_close()
    inbound = _Inbound(request.transport, cfg.upgrade_read_high_water)
    # Installed before the 101 goes out: the client sends nothing upgraded before it has seen it.
    cast(Any, request.protocol).set_parser(inbound)
    await resp.prepare(request)

    async def client_to_upstream() -> None:
        while data := await inbound.read():
            writer.write(data)
            await writer.drain()

    async def upstream_to_client() -> None:
        while data := await reader.read(cfg.chunk_size):
            await resp.write(data)

    tasks = [
        asyncio.create_task(client_to_upstream(), name="streamproxy:client->upstream"),
        asyncio.create_task(upstream_to_client(), name="streamproxy:upstream->client"),
    ]
    try:
        # Either side closing ends the session (a TLS upstream cannot be half-closed anyway).
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError, RuntimeError):
                await t
    return resp


__all__ = [
    "HOP_BY_HOP",
    "StreamProxyConfig",
    "UpstreamError",
    "forward",
    "is_upgrade",
    "outbound_headers",
]
