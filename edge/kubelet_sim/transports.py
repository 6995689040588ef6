"""exec/attach wire protocols: WebSocket channels (v4/v5.channel.k8s.io) and SPDY streams.

WebSocket: every binary message is one channel byte plus data (0 stdin, 1 stdout, 2 stderr, 3 error
= the final metav1.Status as JSON, 4 resize = {"Width","Height"} JSON). v5 adds the CLOSE signal
[255, channel], with which the client half-closes stdin. SPDY: one stream per channel, named by its
`streamType` header; half-close is a FIN.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from edge.aio import within
from edge.kubelet_sim.config import Timeouts
from edge.kubelet_sim.pipes import close_websocket
from edge.kubelet_sim.remotecommand import (
    ERROR,
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    SessionIO,
    Status,
    StreamOptions,
)
from edge.kubelet_sim.spdy import PROTOCOL_ERROR, SpdyConnection, SpdyStream
from edge.kubelet_sim.tty import TerminalSize

log = logging.getLogger(__name__)

V5, V4 = "v5.channel.k8s.io", "v4.channel.k8s.io"
REMOTECOMMAND_PROTOCOLS = (V5, V4)
STREAM_CLOSE = 255
_MAX_MESSAGE = 16 * 1024 * 1024

Runner = Callable[[SessionIO], Awaitable[Status | None]]


def negotiate(client: list[str], server: tuple[str, ...]) -> str | None:
    """The first protocol in the client's order that the server speaks (apimachinery's rule)."""
    return next((p for p in client if p in server), None)


def _resize(data: bytes) -> TerminalSize | None:
    try:
        d = json.loads(data)
        return TerminalSize(int(d["Width"]), int(d["Height"]))
    except (ValueError, KeyError, TypeError):
        return None


def _first_output(opts: StreamOptions) -> int:
    return STDOUT if opts.stdout else STDERR if opts.stderr else ERROR


async def serve_websocket(
    request: web.Request, opts: StreamOptions, run: Runner, timeouts: Timeouts, label: str
) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(
        protocols=REMOTECOMMAND_PROTOCOLS, max_msg_size=_MAX_MESSAGE, timeout=timeouts.write
    )
    await ws.prepare(request)
    v5 = ws.ws_protocol == V5

    async def send(channel: int, data: bytes) -> None:
        await within(ws.send_bytes(bytes([channel]) + data), timeouts.write)

    io = SessionIO(send)
    reader = asyncio.create_task(_read_websocket(ws, io, v5, timeouts.idle), name=f"{label}:ws-reader")
    try:
        # Like the kubelet: an empty frame on the first output channel tells the client we are ready.
        await io.send(_first_output(opts), b"")
        status = await run(io)
        if status is not None:
            await io.send(ERROR, json.dumps(status).encode())
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await close_websocket(ws, request, timeouts.write)
    return ws


async def _read_websocket(ws: web.WebSocketResponse, io: SessionIO, v5: bool, idle: float) -> None:
    try:
        while True:
            msg = await ws.receive(timeout=idle)
            if msg.type != WSMsgType.BINARY:
                if msg.type == WSMsgType.TEXT:
                    continue  # the base64 variants are not offered; ignore stray text
                return
            data: bytes = msg.data
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if v5 and channel == STREAM_CLOSE:
                if payload[:1] == bytes([STDIN]):
                    await io.stdin.put(b"")
            elif channel == STDIN and payload:
                await io.stdin.put(payload)
            elif channel == RESIZE and (size := _resize(payload)) is not None:
                io.put_resize(size)
    except (TimeoutError, ConnectionError) as e:
        log.debug("websocket read ends: %r", e)
    finally:
        io.gone.set()


_STREAM_CHANNELS = {"stdin": STDIN, "stdout": STDOUT, "stderr": STDERR, "error": ERROR, "resize": RESIZE}


async def serve_spdy(
    conn: SpdyConnection, opts: StreamOptions, run: Runner, timeouts: Timeouts, label: str
) -> None:
    """The client opens error, stdin, stdout, stderr (and resize with a tty) streams; once all the request
    announced are there, the session runs. The status goes on the error stream."""
    expected = {"error"}
    expected |= {"stdin"} if opts.stdin else set()
    expected |= {"stdout"} if opts.stdout else set()
    expected |= {"stderr"} if opts.stderr else set()
    expected |= {"resize"} if opts.tty else set()
    streams: dict[int, SpdyStream] = {}
    complete = asyncio.Event()

    async def on_stream(stream: SpdyStream) -> None:
        kind = stream.headers.get("streamtype", "")
        channel = _STREAM_CHANNELS.get(kind)
        if channel is None or kind not in expected or channel in streams:
            await stream.reset(PROTOCOL_ERROR)
            return
        await stream.reply()
        streams[channel] = stream
        if len(streams) == len(expected):
            complete.set()

    serving = asyncio.create_task(conn.serve(on_stream), name=f"{label}:spdy")
    helpers: list[asyncio.Task[Any]] = []
    try:
        ready = asyncio.create_task(complete.wait(), name=f"{label}:streams")
        helpers.append(ready)
        await asyncio.wait(
            {ready, serving}, timeout=timeouts.stream_creation, return_when=asyncio.FIRST_COMPLETED
        )
        if not complete.is_set():
            if ERROR in streams and not serving.done():
                await streams[ERROR].write(b"timed out waiting for client to create streams")
            return

        async def send(channel: int, data: bytes) -> None:
            if channel in streams:
                await streams[channel].write(data)

        io = SessionIO(send)
        helpers.append(asyncio.create_task(_watch(serving, io), name=f"{label}:gone"))
        if STDIN in streams:
            helpers.append(asyncio.create_task(_spdy_stdin(streams[STDIN], io), name=f"{label}:stdin"))
        if RESIZE in streams:
            helpers.append(asyncio.create_task(_spdy_resize(streams[RESIZE], io), name=f"{label}:resize"))
        status = await run(io)
        if status is not None:
            await io.send(ERROR, json.dumps(status).encode())
        for channel in (STDOUT, STDERR, ERROR):
            if channel in streams:
                await streams[channel].close()
        await conn.goaway()
    finally:
        for t in helpers:
            t.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await conn.shutdown()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


async def _watch(serving: asyncio.Task[None], io: SessionIO) -> None:
    await asyncio.wait({serving})
    io.gone.set()


async def _spdy_stdin(stream: SpdyStream, io: SessionIO) -> None:
    while data := await stream.read():
        await io.stdin.put(data)
    await io.stdin.put(b"")


async def _spdy_resize(stream: SpdyStream, io: SessionIO) -> None:
    # Sizes arrive as back-to-back JSON objects on one byte stream.
    buf, decoder = "", json.JSONDecoder()
    while data := await stream.read():
        buf += data.decode(errors="replace")
        while buf.strip():
            try:
                obj, end = decoder.raw_decode(buf.lstrip())
            except ValueError:
                break
            buf = buf.lstrip()[end:]
            if (size := _resize(json.dumps(obj).encode())) is not None:
                io.put_resize(size)
