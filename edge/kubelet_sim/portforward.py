"""Port forwarding into a pod, over SPDY (kubectl; plain or tunnelled in WebSocket) or WebSocket channels.

SPDY (`portforward.k8s.io`): per forwarded connection the client opens an `error` stream and a `data`
stream carrying the same `port` and `requestID` headers. We dial the pod port once both are there and
copy bytes; failures are written to the error stream as {"closeConnection":…, "message":…} JSON.
Both streams are half-closed when the pod side is done, which is what the client waits for.

WebSocket channels (v4.channel.k8s.io, `?port=` query; what client libraries other than kubectl use):
channel 2i carries data for the i-th port and 2i+1 its errors; each starts with the port number as two
little-endian bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from edge.aio import within
from edge.kubelet_sim.config import Timeouts
from edge.kubelet_sim.pipes import close_websocket
from edge.kubelet_sim.spdy import PROTOCOL_ERROR, SpdyConnection, SpdyStream

log = logging.getLogger(__name__)

PORTFORWARD_PROTOCOL = "portforward.k8s.io"
SPDY_TUNNEL_PROTOCOL = "SPDY/3.1+" + PORTFORWARD_PROTOCOL
WS_CHANNEL_PROTOCOLS = ("v4.channel.k8s.io",)
_CHUNK = 32 * 1024

Dialer = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def parse_ports(values: list[str]) -> list[int]:
    ports = []
    for value in values:
        for p in value.split(","):
            port = int(p)
            if not 0 < port < 65536:
                raise ValueError(f"port {p!r} must be between 1 and 65535")
            ports.append(port)
    return ports


def error_message(pod: str, uid: str, port: int, err: BaseException | str) -> bytes:
    body = {
        "closeConnection": True,
        "message": f"error forwarding port {port} to pod {pod}, uid {uid}: {err}",
    }
    return (json.dumps(body) + "\n").encode()


@dataclass(slots=True)
class _Pair:
    data: SpdyStream | None = None
    error: SpdyStream | None = None
    expiry: asyncio.Task[None] | None = None


async def _copy_to_pod(read: Callable[[], Awaitable[bytes]], writer: asyncio.StreamWriter, t: float) -> None:
    try:
        while data := await read():
            writer.write(data)
            await within(writer.drain(), t)
        if writer.can_write_eof():
            writer.write_eof()  # the client half-closed: pass it on, the pod may still answer
    except (ConnectionError, TimeoutError, OSError):
        writer.close()


class SpdyPortForward:
    """Serves one SPDY connection: any number of forwarded connections, each its own stream pair."""

    def __init__(
        self, conn: SpdyConnection, dial: Dialer, *, pod: str, uid: str, timeouts: Timeouts, label: str
    ) -> None:
        self._conn = conn
        self._dial = dial
        self._pod, self._uid = pod, uid
        self._timeouts = timeouts
        self._label = label
        self._pairs: dict[str, _Pair] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            await self._conn.serve(self._on_stream)
        finally:
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_stream(self, stream: SpdyStream) -> None:
        h = stream.headers
        kind = h.get("streamtype", "")
        try:
            port = int(h.get("port", ""))
            if not 0 < port < 65536 or kind not in ("data", "error"):
                raise ValueError
        except ValueError:
            await stream.reset(PROTOCOL_ERROR)
            return
        # Clients too old to send requestID get the kubelet's fallback: derive it from the stream id.
        request_id = h.get("requestid") or str(stream.id if kind == "error" else stream.id - 2)
        await stream.reply()
        pair = self._pairs.get(request_id)
        if pair is None:
            pair = self._pairs[request_id] = _Pair()
            pair.expiry = self._start(self._expire(request_id, pair), f"expire-{request_id}")
        if getattr(pair, kind) is not None:
            await stream.reset(PROTOCOL_ERROR)
            return
        setattr(pair, kind, stream)
        if pair.data is not None and pair.error is not None:
            del self._pairs[request_id]
            if pair.expiry is not None:
                pair.expiry.cancel()
            self._start(self._forward(pair.data, pair.error, port), f"forward-{request_id}")

    def _start(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"{self._label}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _expire(self, request_id: str, pair: _Pair) -> None:
        await asyncio.sleep(self._timeouts.stream_creation)
        if self._pairs.get(request_id) is pair:
            del self._pairs[request_id]
            for stream in (pair.error, pair.data):
                if stream is not None:
                    await stream.write(b"timed out waiting for streams")
                    await stream.close()
                    self._conn.forget(stream)

    async def _forward(self, data: SpdyStream, error: SpdyStream, port: int) -> None:
        try:
            try:
                reader, writer = await within(self._dial(port), self._timeouts.dial)
            except (OSError, TimeoutError, LookupError) as e:
                await error.write(error_message(self._pod, self._uid, port, e))
                return
            t = self._timeouts
            up = asyncio.create_task(_copy_to_pod(data.read, writer, t.write), name=f"{self._label}:up")
            down = asyncio.create_task(_copy_from_pod(reader, data, t.idle), name=f"{self._label}:down")
            reset = asyncio.create_task(data.wait_reset(), name=f"{self._label}:reset")
            try:
                # Done when the pod side ends or the client resets; a client half-close (FIN) only
                # passes the EOF on, since the pod may still answer.
                await asyncio.wait({down, reset}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (up, down, reset):
                    task.cancel()
                await asyncio.gather(up, down, reset, return_exceptions=True)
                writer.close()
        finally:
            await data.close()
            await error.close()
            self._conn.forget(data)
            self._conn.forget(error)


async def _copy_from_pod(reader: asyncio.StreamReader, data: SpdyStream, idle: float) -> None:
    with contextlib.suppress(ConnectionError, OSError, TimeoutError):
        while chunk := await within(reader.read(_CHUNK), idle):
            await data.write(chunk)


async def serve_websocket_channels(
    request: web.Request, ports: list[int], dial: Dialer, *, pod: str, uid: str, timeouts: Timeouts
) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=WS_CHANNEL_PROTOCOLS, timeout=timeouts.write)
    await ws.prepare(request)
    writers: dict[int, asyncio.StreamWriter] = {}
    lock = asyncio.Lock()

    async def send(channel: int, data: bytes) -> None:
        async with lock:
            await within(ws.send_bytes(bytes([channel]) + data), timeouts.write)

    async def downstream(i: int, reader: asyncio.StreamReader) -> None:
        while chunk := await within(reader.read(_CHUNK), timeouts.idle):
            await send(2 * i, chunk)

    tasks = []
    try:
        readers: dict[int, asyncio.StreamReader] = {}
        for i, port in enumerate(ports):
            for ch in (2 * i, 2 * i + 1):
                await send(ch, struct.pack("<H", port))
            try:
                readers[i], writers[i] = await within(dial(port), timeouts.dial)
            except (OSError, TimeoutError, LookupError) as e:
                await send(2 * i + 1, error_message(pod, uid, port, e))
        for i, r in readers.items():
            tasks.append(asyncio.create_task(downstream(i, r), name=f"portforward:{pod}:{ports[i]}"))
        tasks.append(asyncio.create_task(_ws_upstream(ws, writers, timeouts), name=f"portforward:{pod}:ws"))
        # The session ends when the client leaves or the first pod connection closes (as the kubelet does).
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in writers.values():
            w.close()
        await close_websocket(ws, request, timeouts.write)
    return ws


async def _ws_upstream(
    ws: web.WebSocketResponse, writers: dict[int, asyncio.StreamWriter], timeouts: Timeouts
) -> None:
    while True:
        msg = await ws.receive(timeout=timeouts.idle)
        if msg.type != WSMsgType.BINARY:
            return
        data: bytes = msg.data
        if len(data) < 2 or data[0] % 2:
            continue
        w = writers.get(data[0] // 2)
        if w is not None:
            w.write(data[1:])
            await within(w.drain(), timeouts.write)
