"""One tunnelled connection on the server side (a gRPC Stream call opened by the agent), and splice().

Reads pull one frame at a time from the call and never read ahead: a caller that stops reading stops
the gRPC call's HTTP/2 window, which stops the agent reading from the target socket, which stops the
target (per-connection backpressure; other connections are unaffected). The liveness of a quiet
connection is the transport's job (HTTP/2 keepalive pings), not a per-read timeout: a `logs -f` may be
silent for hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import grpc

from aggapi.machinery.aio import within
from edge.tunnel.protocol import MAX_FRAME, pb

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT = 5.0


class ByteConn(Protocol):
    """What splice() and the egress need of a dialled connection: a TunnelConn, or a direct one."""

    node: str  # the node whose agent carries it; "" for a direct connection
    conn_id: str

    async def read(self, n: int = ...) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close_write(self) -> None: ...

    def abort(self, reason: str = ...) -> None: ...

    async def close(self) -> None: ...


class TunnelConn:
    """A byte stream to `host:port` on `node`, carried by the node's tunnel agent.

    read() returns b"" once the far side half-closed (close_write); it raises ConnectionResetError if the
    connection was aborted (agent gone, target reset, close() called).
    """

    def __init__(self, context: Any, *, node: str, host: str, port: int, conn_id: str) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.conn_id = conn_id
        self._ctx = context
        self._buf = b""
        self._buf_off = 0
        self._read_eof = False
        self._write_closed = False
        self._reset: str | None = None
        self._done = asyncio.Event()  # the Stream handler returns (ending the call) once this is set
        self._handler_exited = asyncio.Event()
        self._read_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self._done.is_set()

    def __repr__(self) -> str:
        return f"<TunnelConn {self.conn_id[:8]} {self.node} {self.host}:{self.port}>"

    async def read(self, n: int = MAX_FRAME) -> bytes:
        async with self._read_lock:
            while self._buf_off >= len(self._buf):
                if self._read_eof:
                    return b""
                self._check_open()
                try:
                    frame = await self._ctx.read()
                except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as e:
                    self.abort(f"stream read failed: {e}")
                    raise ConnectionResetError(self._reset) from None
                if frame is grpc.aio.EOF:
                    # The agent ends the call without close_write only when the target or agent failed.
                    self.abort("the agent ended the connection")
                    raise ConnectionResetError(self._reset)
                self._buf, self._buf_off = frame.data, 0
                if frame.close_write:
                    self._read_eof = True
                    self._maybe_done()
            end = self._buf_off + n
            # The common case hands the whole frame over without copying.
            whole = self._buf_off == 0 and end >= len(self._buf)
            out = self._buf if whole else self._buf[self._buf_off : end]
            self._buf_off += len(out)
            return out

    async def write(self, data: bytes) -> None:
        async with self._write_lock:
            if self._write_closed:
                raise BrokenPipeError("write after close_write")
            for off in range(0, len(data), MAX_FRAME):
                await self._send(pb.Frame(data=data[off : off + MAX_FRAME]))

    async def close_write(self) -> None:
        """Half-close: the target sees EOF; reading the other direction goes on."""
        async with self._write_lock:
            if self._write_closed:
                return
            await self._send(pb.Frame(close_write=True))
            self._write_closed = True
        self._maybe_done()

    def abort(self, reason: str = "closed") -> None:
        """End the call now (the agent closes its target socket). Safe to call from anywhere, repeatedly."""
        if self._reset is None and not (self._read_eof and self._write_closed):
            self._reset = reason
        self._done.set()

    async def close(self) -> None:
        self.abort()
        with contextlib.suppress(TimeoutError):
            await within(self._handler_exited.wait(), _CLOSE_TIMEOUT)

    # --- used by the Stream handler ---------------------------------------------------------------

    async def serve(self) -> None:
        """Keep the call open until the connection is closed or aborted (run by the Stream handler)."""
        try:
            await self._done.wait()
        finally:
            self.abort("the agent's stream ended")  # cancelled: the call died under us
            self._handler_exited.set()

    def _check_open(self) -> None:
        if self._done.is_set():
            raise ConnectionResetError(self._reset or "connection closed")

    async def _send(self, frame: pb.Frame) -> None:
        self._check_open()
        try:
            await self._ctx.write(frame)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, RuntimeError) as e:
            self.abort(f"stream write failed: {e}")
            raise ConnectionResetError(self._reset) from None

    def _maybe_done(self) -> None:
        if self._read_eof and self._write_closed:
            self._done.set()


async def splice(conn: ByteConn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Pipe bytes both ways between `conn` and a stream pair until both directions ended or one failed.

    Half-closes are passed on where the transport can express them (TCP, unix sockets); over TLS, where
    asyncio cannot half-close, the end of the tunnel side ends the whole connection. Both ends are
    closed on return, also when cancelled.
    """

    async def client_to_tunnel() -> str:
        while data := await reader.read(MAX_FRAME):
            await conn.write(data)
        await conn.close_write()
        return HALF

    async def tunnel_to_client() -> str:
        while data := await conn.read(MAX_FRAME):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
            return HALF
        return END  # cannot half-close (TLS): finish the whole connection

    up = asyncio.create_task(client_to_tunnel(), name=f"tunnel-splice-up-{conn.conn_id[:8]}")
    down = asyncio.create_task(tunnel_to_client(), name=f"tunnel-splice-down-{conn.conn_id[:8]}")
    clean = False
    try:
        clean = await until_done(up, down)
    finally:
        for t in (up, down):
            t.cancel()
        results = await asyncio.gather(up, down, return_exceptions=True)
        for r in results:
            if isinstance(r, Exception):
                log.debug("%r: splice ended: %s", conn, r)
        conn.abort("splice finished")
        await close_stream(writer, clean)
        await conn.close()


HALF = "half"  # this direction half-closed; the other goes on
END = "end"  # the connection is finished (gracefully)


async def until_done(up: asyncio.Task[str], down: asyncio.Task[str]) -> bool:
    """Wait for both directions to half-close, or one to END the connection (True), or one to fail (False)."""
    pending = {up, down}
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        results = [t.result() if not t.cancelled() and t.exception() is None else None for t in done]
        if None in results:
            return False
        if END in results:
            return True
    return True


async def close_stream(writer: asyncio.StreamWriter, clean: bool) -> None:
    """After a clean end, flush and close (bounded); after a failure, drop unsent data at once: a peer
    that stopped reading would otherwise keep a graceful close, and its socket, waiting forever."""
    try:
        if clean:
            writer.close()
            with contextlib.suppress(Exception):
                await within(writer.wait_closed(), _CLOSE_TIMEOUT)
    finally:
        writer.transport.abort()  # no-op once closed; else drops what a stalled peer never took
