"""One dialled connection on the agent: connect to the local target, open a Stream call, pump bytes.

Each direction moves one frame at a time and waits for the other side to accept it (socket drain, gRPC
write completion) before reading the next, so a slow reader on either end slows only this connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import grpc

from edge.aio import within
from edge.tunnel.metrics import AgentMetrics
from edge.tunnel.protocol import CONN_ID_METADATA, MAX_FRAME, format_hostport, pb

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT = 5.0
Report = Callable[[pb.DialResult], None]


class ChannelUse:
    """Connections alive on one gRPC channel, so a replaced channel is closed only once they are done."""

    def __init__(self) -> None:
        self.active = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def acquire(self) -> None:
        self.active += 1
        self.idle.clear()

    def release(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.idle.set()


async def connect_target(
    host: str, port: int, timeout: float, conn_id: str, report: Report
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Dial the local target; on failure tell the server why (DialResult) and return None."""
    where = format_hostport(host, port)

    def fail(code: pb.DialResult.Code, error: str) -> None:
        report(pb.DialResult(conn_id=conn_id, code=code, error=error))

    try:
        return await within(asyncio.open_connection(host, port, limit=2 * MAX_FRAME), timeout)
    except TimeoutError:
        fail(pb.DialResult.TIMEOUT, f"connect to {where} timed out after {timeout:g}s")
    except ConnectionRefusedError:
        fail(pb.DialResult.REFUSED, f"connect to {where}: connection refused")
    except OSError as e:
        fail(pb.DialResult.UNREACHABLE, f"connect to {where}: {e.strerror or e}")
    return None


async def pipe(
    stub: Any,
    conn_id: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    metrics: AgentMetrics,
    write_timeout: float,
) -> None:
    """Carry one connection over its own Stream call until both directions closed or either side failed.
    Always closes the socket and ends the call."""
    call = stub.Stream(metadata=((CONN_ID_METADATA, conn_id),))
    clean = False
    try:
        # The first (empty) frame makes the call reach the server now rather than with the first data.
        await within(call.write(pb.Frame()), write_timeout)

        async def to_server() -> str:
            while data := await reader.read(MAX_FRAME):
                await call.write(pb.Frame(data=data))
                metrics.bytes_to_server += len(data)
            await call.write(pb.Frame(close_write=True))
            return _HALF

        async def from_server() -> str:
            while True:
                frame = await call.read()
                if frame is grpc.aio.EOF:
                    return _END  # the server closed the connection
                if frame.data:
                    writer.write(frame.data)
                    metrics.bytes_from_server += len(frame.data)
                    await writer.drain()
                if frame.close_write:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return _HALF

        up = asyncio.create_task(to_server(), name=f"tunnel-pipe-up-{conn_id[:8]}")
        down = asyncio.create_task(from_server(), name=f"tunnel-pipe-down-{conn_id[:8]}")
        try:
            clean = await _until_done(up, down)
        finally:
            for t in (up, down):
                t.cancel()
            for r in await asyncio.gather(up, down, return_exceptions=True):
                if isinstance(r, Exception):
                    log.debug("tunnel conn %s ended: %r", conn_id[:8], r)
        if clean and up.done() and down.done() and down.result() == _HALF:
            # Both sides half-closed: the server ends the call; wait briefly so it ends with OK, not a reset.
            with contextlib.suppress(Exception):
                await within(call.code(), write_timeout)
    except (grpc.aio.AioRpcError, TimeoutError, ConnectionError) as e:
        log.debug("tunnel conn %s failed: %s", conn_id[:8], e)
    finally:
        call.cancel()
        await _close_stream(writer, clean)


# Same shapes as aggapi.tunnel.conn's splice (edge may not import aggapi; the copy is small).
_HALF = "half"  # this direction half-closed; the other goes on
_END = "end"  # the connection is finished (gracefully)


async def _until_done(up: asyncio.Task[str], down: asyncio.Task[str]) -> bool:
    """Wait for both directions to half-close or one to END (True), or for one to fail (False)."""
    pending = {up, down}
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        results = [t.result() if not t.cancelled() and t.exception() is None else None for t in done]
        if None in results:
            return False
        if _END in results:
            return True
    return True


async def _close_stream(writer: asyncio.StreamWriter, clean: bool) -> None:
    """After a clean end, flush and close (bounded); after a failure drop unsent data at once: a target
    that stopped reading would otherwise hold a graceful close, and its socket, forever."""
    try:
        if clean:
            writer.close()
            with contextlib.suppress(Exception):
                await within(writer.wait_closed(), _CLOSE_TIMEOUT)
    finally:
        writer.transport.abort()
