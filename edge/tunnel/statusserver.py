"""The agent's `/metrics` (Prometheus text) and `/healthz` endpoint: a tiny HTTP/1.1 responder on asyncio.

Not aiohttp (the agent stays small) and not a thread: answering from the agent's own event loop keeps
the counters read where they are written, lets the server be a named task of the agent's TaskGroup
(cancelled and awaited with it), and makes `/healthz` answer only while that loop actually runs —
a blocked loop shows as a probe timeout. One request per connection (`Connection: close`), GET/HEAD only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from edge.aio import within
from edge.tunnel.protocol import format_hostport

log = logging.getLogger(__name__)

_MAX_HEAD = 16 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}

Health = Callable[[], str | None]  # None when healthy, else why not


class StatusServer:
    def __init__(self, registry: CollectorRegistry, health: Health, *, timeout: float = 10.0) -> None:
        self._registry = registry
        self._health = health
        self._timeout = timeout  # reading a request and writing its answer, each
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self, host: str, port: int) -> None:
        """Listen and answer from now on (so a taken port fails the caller at once, and nobody who
        connects right after is refused); serve() keeps it up until cancelled."""
        self._server = await asyncio.start_server(self._handle, host, port, limit=_MAX_HEAD)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound, e.g. for a requested port 0."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the status server is not listening")
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def serve(self) -> None:
        """Answer until cancelled; then stop listening and end the open requests."""
        if self._server is None:
            raise RuntimeError("start() first")
        host, port = self.address
        try:
            await self._server.start_serving()
            log.info("tunnel agent: serving /metrics and /healthz on %s", format_hostport(host, port))
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening and cancel the requests being answered (idempotent)."""
        self._closed = True
        if self._server is not None:
            self._server.close()
        handlers = list(self._handlers)
        for t in handlers:
            t.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await within(self._server.wait_closed(), self._timeout)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._closed or task is None:  # accepted just before close(): not answered
            writer.transport.abort()
            return
        self._handlers.add(task)
        try:
            status, ctype, body, head_only = await self._answer(reader)
            writer.write(_response(status, ctype, body, head_only))
            await within(writer.drain(), self._timeout)
            writer.close()
            await within(writer.wait_closed(), self._timeout)
        except (ConnectionError, TimeoutError) as e:
            log.debug("tunnel agent status request: %r", e)
        finally:
            writer.transport.abort()  # a no-op after a clean close; drops a client that stopped reading
            self._handlers.discard(task)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes, bool]:
        try:
            head = await within(reader.readuntil(b"\r\n\r\n"), self._timeout)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return 400, "text/plain; charset=utf-8", b"bad request\n", False
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, "text/plain; charset=utf-8", b"bad request\n", False
        method, target = parts[0], parts[1]
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"only GET and HEAD\n", False
        path = target.split("?", 1)[0]
        if path == "/metrics":
            accept = ""
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "accept":
                    accept = value.strip()
            encode, ctype = choose_encoder(accept)
            return 200, ctype, encode(self._registry), head_only
        if path == "/healthz":
            problem = self._health()
            if problem is None:
                return 200, "text/plain; charset=utf-8", b"ok\n", head_only
            return 500, "text/plain; charset=utf-8", f"unhealthy: {problem}\n".encode(), head_only
        return 404, "text/plain; charset=utf-8", b"not found (try /metrics or /healthz)\n", head_only


def _response(status: int, ctype: str, body: bytes, head_only: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + body
