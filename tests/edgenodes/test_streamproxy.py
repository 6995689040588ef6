"""aggapi.http.streamproxy on its own: a real aiohttp server forwarding over a real TCP connection to a raw
upstream that records what arrived and answers as each test scripts it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import yarl
from aiohttp import web

from aggapi.http import streamproxy

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Upstream"], Awaitable[None]]


@dataclass
class Upstream:
    script: Script
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    port: int = 0


async def _read_request(reader: asyncio.StreamReader, up: Upstream) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    up.heads.append(head)
    lower = head.lower()
    body = b""
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    elif b"content-length:" in lower:
        n = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        body = await reader.readexactly(n)
    up.bodies.append(body)
    return head


@contextlib.asynccontextmanager
async def proxy_setup(script: Script) -> AsyncIterator[tuple[str, Upstream]]:
    """(base URL of a proxy, the upstream it forwards every request to)."""
    up = Upstream(script)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer, up)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    up.port = server.sockets[0].getsockname()[1]

    async def handler(request: web.Request) -> web.StreamResponse:
        reader, writer = await asyncio.open_connection("127.0.0.1", up.port)
        try:
            return await streamproxy.forward(
                request, reader, writer, target=request.raw_path, host=f"127.0.0.1:{up.port}"
            )
        except streamproxy.UpstreamError as exc:
            return web.Response(status=502, text=str(exc))
        finally:
            writer.close()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", up
    finally:
        await runner.cleanup()
        server.close()
        await server.wait_closed()


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
    await _read_request(reader, up)
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close, X-Secret-Hop\r\nX-Secret-Hop: 1\r\n"
        b"Keep-Alive: timeout=5\r\nX-End: kept\r\n\r\nhello"
    )
    await writer.drain()


async def test_headers_credentials_and_hop_by_hop_are_dropped_both_ways() -> None:
    async with proxy_setup(_answer) as (base, up), aiohttp.ClientSession() as s:
        headers = {
            "Authorization": "Bearer secret",
            "Proxy-Authorization": "Basic x",
            "Impersonate-User": "mallory",
            "Impersonate-Group": "system:masters",
            "X-Remote-User": "mallory",
            "X-Remote-Extra-Scopes": "all",
            "Connection": "X-Hop",
            "X-Hop": "1",
            "X-Custom": "kept",
        }
        url = yarl.URL(f"{base}/some/path?a=1&b=%2F", encoded=True)  # sent exactly like this
        async with s.get(url, headers=headers) as resp:
            assert resp.status == 200 and await resp.read() == b"hello"
            assert resp.headers["X-End"] == "kept"
            assert "X-Secret-Hop" not in resp.headers and "Keep-Alive" not in resp.headers
    head = up.heads[0].decode().lower()
    assert head.startswith("get /some/path?a=1&b=%2f http/1.1\r\n")
    for gone in ("authorization", "impersonate-", "x-remote-", "x-hop"):
        assert gone not in head, gone
    assert "x-custom: kept" in head and "x-forwarded-for: 127.0.0.1" in head
    assert "connection: close" in head


async def _echo_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
    await _read_request(reader, up)
    body = up.bodies[-1]
    writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()


async def test_request_bodies_chunked_and_sized() -> None:
    async def gen() -> AsyncIterator[bytes]:
        for part in (b"one,", b"two,", b"three"):
            yield part

    async with proxy_setup(_echo_body) as (base, up), aiohttp.ClientSession() as s:
        async with s.post(f"{base}/x", data=gen()) as resp:  # no length: chunked
            assert resp.status == 201 and await resp.read() == b"one,two,three"
        async with s.put(f"{base}/x", data=b"sized body") as resp:
            assert resp.status == 201 and await resp.read() == b"sized body"
    assert b"transfer-encoding: chunked" in up.heads[0].lower()
    assert b"content-length: 10" in up.heads[1].lower()


async def test_chunked_response_streams_chunk_by_chunk() -> None:
    go = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        await _read_request(reader, up)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
        await writer.drain()
        await go.wait()
        writer.write(b"7\r\nsecond\n\r\n0\r\n\r\n")
        await writer.drain()

    async with (
        proxy_setup(script) as (base, _),
        aiohttp.ClientSession() as s,
        s.get(f"{base}/logs?follow=true") as resp,
    ):
        assert await asyncio.wait_for(resp.content.readline(), 5) == b"first\n"  # before "second" exists
        go.set()
        assert await asyncio.wait_for(resp.content.readline(), 5) == b"second\n"
        assert await resp.content.read() == b""


async def test_response_until_eof_and_head() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        head = await _read_request(reader, up)
        if head.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 100_000)  # ends at EOF
        await writer.drain()

    async with proxy_setup(script) as (base, _), aiohttp.ClientSession() as s:
        async with s.get(f"{base}/big") as resp:
            assert resp.status == 200 and await resp.read() == b"x" * 100_000
        async with s.head(f"{base}/big") as resp:
            assert resp.status == 200 and resp.headers["Content-Length"] == "42"
            assert await resp.read() == b""


async def test_interim_responses_are_skipped() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        await _read_request(reader, up)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with (
        proxy_setup(script) as (base, _),
        aiohttp.ClientSession() as s,
        s.post(f"{base}/x", data=b"b") as resp,
    ):
        assert resp.status == 200 and await resp.read() == b"ok"


async def test_garbage_from_upstream_is_an_upstream_error() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        await _read_request(reader, up)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    async with proxy_setup(script) as (base, _), aiohttp.ClientSession() as s, s.get(f"{base}/x") as resp:
        assert resp.status == 502 and "not an HTTP/1.x status line" in await resp.text()


async def _upgrader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
    head = await _read_request(reader, up)
    if b"/refuse" in head.split(b"\r\n")[0]:
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope")
        await writer.drain()
        return
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n")
    await writer.drain()
    while data := await reader.read(65536):  # echo, upper-cased, until the client closes
        writer.write(data.upper())
        await writer.drain()


async def test_upgrade_to_a_protocol_aiohttp_does_not_know_is_spliced() -> None:
    async with proxy_setup(_upgrader) as (base, up):
        port = int(base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /exec?x=1 HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"upgrade: spdy/3.1" in head.lower()
        for msg in (b"frame one", b"frame two" * 10_000):
            writer.write(msg)
            await writer.drain()
            got = b""
            while len(got) < len(msg):
                got += await asyncio.wait_for(reader.read(65536), 5)
            assert got == msg.upper()
        writer.close()
        assert b"x-stream-protocol-version: v4.channel.k8s.io" in up.heads[0].lower()

        # A refused upgrade is an ordinary response.
        async with aiohttp.ClientSession() as s:
            hdrs = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}
            async with s.post(f"{base}/refuse", headers=hdrs) as resp:
                assert resp.status == 403 and await resp.read() == b"nope"
