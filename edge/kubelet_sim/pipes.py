"""Byte pipes under a SPDY connection: WebSocket binary messages, or a raw HTTP/1.1 upgrade.

aiohttp has no public API for non-WebSocket upgrades: its HTTP parser only switches to "upgraded" for
`websocket`/`tcp`, so after our 101 it would parse SPDY frames as HTTP. Installing a payload parser on
the request's protocol (what aiohttp's own WebSocketResponse does) routes every later byte to us.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

from aiohttp import WSMsgType, web

from edge.aio import within
from edge.kubelet_sim.spdy import BytePipe

_READ_HIGH_WATER = 1 << 20


async def close_websocket(ws: web.WebSocketResponse, request: web.Request, timeout: float) -> None:
    """Close with the handshake normally; when the sim is shutting down (our task is being cancelled)
    drop the connection instead of waiting for a client that may not be reading."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        if request.transport is not None:
            request.transport.close()
        return
    with contextlib.suppress(TimeoutError, ConnectionError):
        await within(ws.close(), timeout)


class WebSocketPipe(BytePipe):
    """SPDY tunnelled in WebSocket binary messages (kubectl's `SPDY/3.1+portforward.k8s.io`)."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, close_timeout: float) -> None:
        self.ws = ws
        self._request = request
        self._close_timeout = close_timeout

    async def read(self) -> bytes:
        while True:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.BINARY:
                if msg.data:  # an empty message is legal and must not read as end of stream
                    return cast(bytes, msg.data)
                continue
            if msg.type == WSMsgType.TEXT:
                raise ConnectionError("text message on a binary tunnel")
            return b""

    async def write(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def close(self) -> None:
        await close_websocket(self.ws, self._request, self._close_timeout)


class _RawParser:
    """Receives the bytes aiohttp's protocol hands to a payload parser once we own the socket."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._buf = bytearray()
        self._eof = False
        self._ready = asyncio.Event()
        self._paused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._buf += data
        self._ready.set()
        if len(self._buf) > _READ_HIGH_WATER and not self._paused:
            self._paused = True  # backpressure: stop reading the socket until the consumer catches up
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
        if self._paused:
            self._paused = False
            self._transport.resume_reading()
        return data


class _UpgradeResponse(web.StreamResponse):
    # No Content-Length/chunking framing after a 101: the body is the new protocol's byte stream.
    _length_check = False


class UpgradedPipe(BytePipe):
    def __init__(self, resp: _UpgradeResponse, parser: _RawParser, transport: asyncio.Transport) -> None:
        self._resp = resp
        self._parser = parser
        self._transport = transport

    @property
    def response(self) -> web.StreamResponse:
        """What the aiohttp handler returns once the upgraded session is over."""
        return self._resp

    async def read(self) -> bytes:
        return await self._parser.read()

    async def write(self, data: bytes) -> None:
        await self._resp.write(data)

    async def close(self) -> None:
        self._transport.close()


async def upgrade_raw(request: web.Request, headers: dict[str, str]) -> UpgradedPipe:
    """Answer 101 Switching Protocols with `headers` and take over the connection's bytes."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("connection lost before upgrade")
    parser = _RawParser(transport)
    # Installed before the 101 goes out, so no byte the client sends after reading it can be misparsed.
    cast(Any, request.protocol).set_parser(parser)
    request.protocol.keep_alive(False)
    resp = _UpgradeResponse(status=101, headers=headers)
    resp.force_close()
    await resp.prepare(request)
    return UpgradedPipe(resp, parser, transport)
