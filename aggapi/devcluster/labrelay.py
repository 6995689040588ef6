"""A cuttable TCP relay: the lab puts one between each edge node and the devcluster (its "cloud link"),
so `aggapi dev cut <node>` can break the link the way a network does: open connections are reset and
new ones are refused until `heal`. Bytes are relayed as they are (TLS passes through end to end).

Runs its own asyncio loop in a daemon thread: the lab itself is synchronous (subprocess children)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
T = TypeVar("T")


class Relay:
    def __init__(self, name: str, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.name = name
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"relay-{name}", daemon=True)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut

    def start(self) -> None:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._serve, self.host, 0))
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self.cut()
        if self._server is not None:
            self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def cut(self) -> None:
        """Reset every relayed connection and refuse new ones (accepted, then closed at once)."""
        self._cut = True
        self._call(self._drop_all())

    def heal(self) -> None:
        self._cut = False

    # ---- internals --------------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _drop_all(self) -> None:
        for w in list(self._writers):
            _abort(w)
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            _abort(writer)
            return
        try:
            async with asyncio.timeout(10):
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except (OSError, TimeoutError) as e:
            log.info("relay %s: cannot reach %s:%d: %s", self.name, *self.target, e)
            _abort(writer)
            return
        pair = {writer, up_writer}
        self._writers |= pair
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._writers -= pair
            for w in pair:
                _abort(w)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    # No read timeout: a relayed watch may be idle for minutes; a cut aborts the transports instead.
    try:
        while chunk := await src.read(_CHUNK):
            dst.write(chunk)
            await dst.drain()
        with contextlib.suppress(OSError, RuntimeError):
            dst.write_eof()
    except (OSError, RuntimeError):
        _abort(dst)


def _abort(w: asyncio.StreamWriter) -> None:
    # A reset, not a polite close: what a cut link looks like to both ends.
    with contextlib.suppress(Exception):
        w.transport.abort()
