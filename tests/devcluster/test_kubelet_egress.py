"""EgressDialer over the TLS transport: HTTP CONNECT to a proxy that requires a client certificate,
then TLS to the kubelet inside that TLS connection, with the kubelet client certificate verified by
the kubelet and the kubelet's serving certificate verified against the kubelet CA."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aggapi.devcluster.egress import EgressDialer, EgressError, EgressTransport, kubelet_tls
from certs.files import write_pair
from certs.pki import issue_client, issue_serving, new_ca


async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    w.close()


@contextlib.asynccontextmanager
async def serving(handler: object, ctx: ssl.SSLContext) -> AsyncIterator[int]:
    tasks: set[asyncio.Task[None]] = set()

    async def track(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(r, w)  # type: ignore[operator]
        finally:
            tasks.discard(task)

    server = await asyncio.start_server(track, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _server_ctx(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def test_connect_over_tls_then_tls_to_the_kubelet(tmp_path: Path) -> None:
    files: dict[str, Path] = {}
    for name in ("proxy-ca", "kas-ca", "kubelet-ca", "kubelet-client-ca"):
        ca = new_ca(name)
        files[name] = tmp_path / f"{name}.crt"
        files[name].write_bytes(ca.cert_pem())
        if name == "proxy-ca":
            write_pair(
                issue_serving(ca, common_name="egress", ips=["127.0.0.1"]),
                tmp_path / "p.crt",
                tmp_path / "p.key",
            )
        elif name == "kas-ca":
            write_pair(
                issue_client(ca, common_name="kube-apiserver"), tmp_path / "kas.crt", tmp_path / "kas.key"
            )
        elif name == "kubelet-ca":
            write_pair(
                issue_serving(ca, common_name="kubelet", ips=["127.0.0.1"]),
                tmp_path / "k.crt",
                tmp_path / "k.key",
            )
        else:
            write_pair(
                issue_client(ca, common_name="kubelet-client"), tmp_path / "kc.crt", tmp_path / "kc.key"
            )
    seen: list[bytes] = []

    async def kubelet(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n", 1)[0])
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        w.close()

    kubelet_ctx = _server_ctx(tmp_path / "k.crt", tmp_path / "k.key", files["kubelet-client-ca"])
    async with serving(kubelet, kubelet_ctx) as kubelet_port:

        async def proxy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            line = (await r.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0]
            seen.append(line)
            if line != f"CONNECT 127.0.0.1:{kubelet_port} HTTP/1.1".encode():
                w.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\nnot yours\n")
                await w.drain()
                w.close()
                return
            tr, tw = await asyncio.open_connection("127.0.0.1", kubelet_port)
            w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await w.drain()
            await asyncio.gather(_pipe(r, tw), _pipe(tr, w))

        proxy_ctx = _server_ctx(tmp_path / "p.crt", tmp_path / "p.key", files["kas-ca"])
        async with serving(proxy, proxy_ctx) as proxy_port:
            transport = EgressTransport(
                url=f"https://127.0.0.1:{proxy_port}",
                ca_bundle=str(files["proxy-ca"]),
                client_cert=str(tmp_path / "kas.crt"),
                client_key=str(tmp_path / "kas.key"),
            )
            tls = kubelet_tls(str(tmp_path / "kc.crt"), str(tmp_path / "kc.key"), str(files["kubelet-ca"]))
            dialer = EgressDialer(transport, tls, timeout=10)
            reader, writer = await dialer.dial("127.0.0.1", kubelet_port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            assert (await asyncio.wait_for(reader.read(), 10)).endswith(b"\r\n\r\nok")
            writer.close()
            assert seen == [f"CONNECT 127.0.0.1:{kubelet_port} HTTP/1.1".encode(), b"GET /healthz HTTP/1.1"]

            with pytest.raises(EgressError, match=r"code 403: 403 Forbidden: not yours"):
                await dialer.dial("127.0.0.1", 1)
            # A kubelet certificate from another CA is refused.
            other = kubelet_tls(str(tmp_path / "kc.crt"), str(tmp_path / "kc.key"), str(files["proxy-ca"]))
            with pytest.raises(EgressError, match="TLS handshake with the kubelet"):
                await EgressDialer(transport, other, timeout=10).dial("127.0.0.1", kubelet_port)
