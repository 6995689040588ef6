"""The server half of SPDY/3.1 that kubectl's port-forward and exec fallback speak (moby/spdystream).

Only what those clients use: SYN_STREAM in, SYN_REPLY/DATA/RST_STREAM out, PING echo, GOAWAY,
zlib-compressed header blocks. SETTINGS, WINDOW_UPDATE and HEADERS are read and ignored: spdystream
implements no flow control, so honouring send windows would stall every stream after 64 KiB.
The connection runs over any byte pipe (a raw upgraded socket, or WebSocket binary messages when
kubectl tunnels SPDY through `SPDY/3.1+portforward.k8s.io`). Each stream buffers a bounded number of
inbound chunks; a stream whose reader falls that far behind pauses reading for the whole connection
(head-of-line blocking, as in spdystream itself) rather than growing memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edge.aio import within

log = logging.getLogger(__name__)

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
# RST_STREAM status codes used here.
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, CANCEL = 1, 2, 3, 5
MAX_DATA_FRAME = 32 * 1024
_QUEUE_CHUNKS = 64

# Header-compression dictionary from the SPDY/3 specification (§2.6.10.1): length-prefixed names, then
# one run of common values.
_DICT_NAMES = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base content-encoding "
    "content-language content-length content-location content-md5 content-range content-type date "
    "etag expect expires from host if-match if-modified-since if-none-match if-range "
    "if-unmodified-since last-modified location max-forwards pragma proxy-authenticate "
    "proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
    "user-agent vary via warning www-authenticate method get status"
)
_DICT_WORDS = [
    *_DICT_NAMES.split(),
    *("200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"),
]
_DICT_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
HEADER_DICTIONARY = (
    b"".join(struct.pack(">I", len(w)) + w.encode() for w in _DICT_WORDS) + _DICT_TAIL.encode()
)


class SpdyError(Exception):
    """The peer broke the framing; the connection cannot continue."""


@dataclass(frozen=True, slots=True)
class Frame:
    control: bool
    kind: int  # control frame type, or 0 for DATA
    flags: int
    stream_id: int
    payload: bytes


def parse_frames(buf: bytearray) -> list[Frame]:
    """Remove and return every complete frame at the start of `buf`."""
    frames: list[Frame] = []
    while len(buf) >= 8:
        first, flags_len = struct.unpack_from(">II", buf)
        length = flags_len & 0xFFFFFF
        if len(buf) < 8 + length:
            break
        payload = bytes(buf[8 : 8 + length])
        del buf[: 8 + length]
        flags = flags_len >> 24
        if first & 0x80000000:
            version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
            if version != VERSION:
                raise SpdyError(f"unsupported SPDY version {version}")
            sid = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF if len(payload) >= 4 else 0
            frames.append(Frame(True, kind, flags, sid, payload))
        else:
            frames.append(Frame(False, 0, flags, first & 0x7FFFFFFF, payload))
    return frames


def control_frame(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, data: bytes, *, fin: bool = False) -> bytes:
    return struct.pack(">II", stream_id, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data


def encode_header_block(headers: dict[str, str]) -> bytes:
    out = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        n, v = name.lower().encode(), value.encode()
        out += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(out)


def decode_header_block(block: bytes) -> dict[str, str]:
    """Names are lower-case on the wire; several values of one name are NUL-separated (kept as-is)."""
    try:
        (count,) = struct.unpack_from(">I", block)
        pos, headers = 4, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", block, pos)
            name = block[pos + 4 : pos + 4 + n].decode()
            pos += 4 + n
            (n,) = struct.unpack_from(">I", block, pos)
            headers[name.lower()] = block[pos + 4 : pos + 4 + n].decode()
            pos += 4 + n
    except (struct.error, UnicodeDecodeError) as e:
        raise SpdyError(f"bad header block: {e}") from e
    return headers


class HeaderCodec:
    """One zlib stream per direction for the life of the connection, as SPDY requires."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zdict=HEADER_DICTIONARY)
        self._inflate = zlib.decompressobj(zdict=HEADER_DICTIONARY)

    def compress(self, headers: dict[str, str]) -> bytes:
        block = encode_header_block(headers)
        return self._deflate.compress(block) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def decompress(self, data: bytes) -> dict[str, str]:
        try:
            return decode_header_block(self._inflate.decompress(data))
        except zlib.error as e:
            raise SpdyError(f"header decompression: {e}") from e


class BytePipe:
    """What a SPDY connection runs over. `read` returns b"" at end of stream."""

    async def read(self) -> bytes:
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class SpdyStream:
    """A peer-initiated stream. Reads return b"" once the peer half-closed (FIN) or reset it."""

    def __init__(self, conn: SpdyConnection, stream_id: int, headers: dict[str, str], fin: bool) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = headers
        self.reset_by_peer = False
        self._reset = asyncio.Event()
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue(_QUEUE_CHUNKS)
        self._remote_done = False
        self._local_done = False
        self._replied = False
        self._discarding = False
        if fin:
            self._remote_closed()

    @property
    def closed(self) -> bool:
        return self._local_done

    async def reply(self) -> None:
        if not self._replied:
            self._replied = True
            await self.conn.send_control(SYN_REPLY, 0, struct.pack(">I", self.id), headers={})

    async def read(self) -> bytes:
        if self._discarding or (self._remote_done and self._inbox.empty()):
            return b""
        chunk = await self._inbox.get()
        if not chunk:
            self._remote_done = True
        return chunk

    async def write(self, data: bytes) -> None:
        if self._local_done or self.reset_by_peer or self.conn.closed:
            return
        view = memoryview(data)
        for i in range(0, len(view), MAX_DATA_FRAME):
            await self.conn.send_raw(data_frame(self.id, bytes(view[i : i + MAX_DATA_FRAME])))

    async def close(self) -> None:
        """Half-close our side (DATA with FIN)."""
        if self._local_done:
            return
        self._local_done = True
        if not self.reset_by_peer and not self.conn.closed:
            await self.conn.send_raw(data_frame(self.id, b"", fin=True))

    async def reset(self, status: int = CANCEL) -> None:
        if self._local_done and self._remote_done:
            return
        self._local_done = True
        self._remote_closed()
        if not self.reset_by_peer and not self.conn.closed:
            await self.conn.send_control(RST_STREAM, 0, struct.pack(">II", self.id, status))

    async def wait_reset(self) -> None:
        """Returns once the peer reset the stream (or the connection ended)."""
        await self._reset.wait()

    def _peer_reset(self) -> None:
        self.reset_by_peer = True
        self._reset.set()
        self.discard()

    def discard(self) -> None:
        """Drop what is queued and whatever still arrives: nobody will read it. This also frees the
        connection's reader if it is waiting for room in this stream's queue."""
        self._discarding = True
        while not self._inbox.empty():
            self._inbox.get_nowait()
        self._remote_done = True
        self._inbox.put_nowait(b"")  # wakes a pending reader

    def _remote_closed(self) -> None:
        if not self._remote_done:
            self._remote_done = True
            # Wake a pending reader; put_nowait cannot fail when a reader is waiting on an empty queue.
            if not self._inbox.full():
                self._inbox.put_nowait(b"")

    async def _deliver(self, data: bytes, fin: bool) -> None:
        if self._discarding:
            return
        if data and not self._remote_done:
            await self._inbox.put(data)
        if fin:
            self._remote_closed()


class SpdyConnection:
    """Reads frames, hands new peer streams to `on_stream`, echoes pings, serializes writes."""

    def __init__(self, pipe: BytePipe, *, write_timeout: float, idle_timeout: float) -> None:
        self.pipe = pipe
        self.streams: dict[int, SpdyStream] = {}
        self.closed = False
        self._codec = HeaderCodec()
        self._wlock = asyncio.Lock()
        self._write_timeout = write_timeout
        self._idle_timeout = idle_timeout
        self._last_peer_id = 0

    async def send_raw(self, frame: bytes) -> None:
        async with self._wlock:
            await self._put(frame)

    async def send_control(
        self, kind: int, flags: int, fixed: bytes, *, headers: dict[str, str] | None = None
    ) -> None:
        # Compress under the write lock: the peer's inflater must see blocks in emission order.
        async with self._wlock:
            payload = fixed + (self._codec.compress(headers) if headers is not None else b"")
            await self._put(control_frame(kind, flags, payload))

    async def _put(self, frame: bytes) -> None:
        """Never raises: a connection that cannot be written to is over, for readers too."""
        if self.closed:
            return
        try:
            await within(self.pipe.write(frame), self._write_timeout)
        except (TimeoutError, ConnectionError, OSError) as e:
            log.debug("spdy write failed: %r", e)
            await self.shutdown()

    async def serve(self, on_stream: Callable[[SpdyStream], Awaitable[None]]) -> None:
        """Run until the peer goes away. `on_stream` must not block for long: frames wait behind it."""
        buf = bytearray()
        try:
            while True:
                chunk = await within(self.pipe.read(), self._idle_timeout)
                if not chunk:
                    return
                buf += chunk
                for frame in parse_frames(buf):
                    if not await self._handle(frame, on_stream):
                        return
        except (TimeoutError, SpdyError, ConnectionError) as e:
            log.debug("spdy connection ends: %r", e)
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in self.streams.values():
            stream._peer_reset()  # nothing more can be read or written
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            await within(self.pipe.close(), self._write_timeout)

    async def goaway(self) -> None:
        if not self.closed:
            await self.send_control(GOAWAY, 0, struct.pack(">II", self._last_peer_id, 0))

    async def _handle(self, f: Frame, on_stream: Callable[[SpdyStream], Awaitable[None]]) -> bool:
        if not f.control:
            stream = self.streams.get(f.stream_id)
            if stream is not None:
                await stream._deliver(f.payload, bool(f.flags & FLAG_FIN))
            return True
        if f.kind == SYN_STREAM:
            if len(f.payload) < 10:
                raise SpdyError("short SYN_STREAM")
            headers = self._codec.decompress(f.payload[10:])
            if f.stream_id % 2 == 0 or f.stream_id <= self._last_peer_id:
                await self.send_control(RST_STREAM, 0, struct.pack(">II", f.stream_id, PROTOCOL_ERROR))
                return True
            self._last_peer_id = f.stream_id
            stream = SpdyStream(self, f.stream_id, headers, bool(f.flags & FLAG_FIN))
            self.streams[f.stream_id] = stream
            await on_stream(stream)
        elif f.kind in (SYN_REPLY, HEADERS):
            self._codec.decompress(f.payload[4:])  # keeps the inflater in step; we open no streams
        elif f.kind == RST_STREAM:
            stream = self.streams.pop(f.stream_id, None)
            if stream is not None:
                stream._peer_reset()
        elif f.kind == PING:
            await self.send_control(PING, 0, f.payload[:4])
        elif f.kind == GOAWAY:
            return False
        return True

    def forget(self, stream: SpdyStream) -> None:
        """The stream is finished with: later frames for it are dropped."""
        self.streams.pop(stream.id, None)
        stream.discard()
