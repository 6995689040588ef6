"""HTTP/1.1 on an already-open stream (an upgrade to an aggregated server, or a kubelet connection
dialled through the egress): writing a request head, reading a response head, and reading its body
whole or chunk by chunk as it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

HEAD_LIMIT = 64 * 1024
_READ = 64 * 1024

Headers = list[tuple[str, str]]


def request_head(method: str, target: str, host: str, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_head(reader: asyncio.StreamReader) -> tuple[int, str, Headers]:
    raw = await reader.readuntil(b"\r\n\r\n")
    if len(raw) > HEAD_LIMIT:
        raise ValueError("response head too large")
    lines = raw.decode("latin-1").split("\r\n")
    _, code, *reason = lines[0].split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)]
    return int(code), (reason[0] if reason else ""), headers


def _lower(headers: Headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers}


async def iter_body(reader: asyncio.StreamReader, headers: Headers) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive: de-chunked, up to Content-Length, or until the peer closes."""
    h = _lower(headers)
    if "chunked" in h.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return
            left = size
            while left:
                data = await reader.read(min(left, _READ))
                if not data:
                    raise asyncio.IncompleteReadError(b"", left)
                left -= len(data)
                yield data
            await reader.readexactly(2)
    elif "content-length" in h:
        left = int(h["content-length"])
        while left:
            data = await reader.read(min(left, _READ))
            if not data:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(data)
            yield data
    else:
        while data := await reader.read(_READ):
            yield data


async def read_body(reader: asyncio.StreamReader, headers: Headers, limit: int = 1 << 22) -> bytes:
    out = bytearray()
    async for chunk in iter_body(reader, headers):
        out += chunk
        if len(out) > limit:
            break
    return bytes(out[:limit])
