"""TCP echo servers standing in for a sample pod's listening port (the port-forward target)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from edge.aio import within

log = logging.getLogger(__name__)

_CHUNK = 32 * 1024


class EchoServers:
    def __init__(self, host: str, *, write_timeout: float = 30.0, idle_timeout: float = 4 * 3600.0) -> None:
        self._host = host
        self._write_timeout = write_timeout
        self._idle_timeout = idle_timeout
        self._servers: list[asyncio.Server] = []
        self._conns: set[asyncio.StreamWriter] = set()
        # asyncio.Server (3.11) does not wait for its connection handlers on close; we do.
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, pod_port: int) -> tuple[str, int]:
        """A fresh echo server on an ephemeral port of the node address; returns where it listens."""
        server = await asyncio.start_server(self._serve, self._host, 0)
        self._servers.append(server)
        host, port = server.sockets[0].getsockname()[:2]
        log.debug("echo server for pod port %d on %s:%d", pod_port, host, port)
        return host, port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._conns.add(writer)
        try:
            while data := await within(reader.read(_CHUNK), self._idle_timeout):
                writer.write(data)
                await within(writer.drain(), self._write_timeout)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._handlers.discard(task)
            self._conns.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await within(writer.wait_closed(), self._write_timeout)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._conns):
            writer.close()
        # Closed sockets end the handlers by themselves. Cancelling them instead would trip a 3.11 bug:
        # asyncio's stream callback calls task.exception() on the cancelled task and logs an error.
        if self._handlers:
            _, stuck = await asyncio.wait(list(self._handlers), timeout=self._write_timeout)
            for task in stuck:
                task.cancel()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
