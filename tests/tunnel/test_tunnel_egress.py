"""HTTP CONNECT egress (what kube-apiserver's EgressSelector talks to): unix socket, TLS with client certs."""

from __future__ import annotations

import asyncio
import ssl
import stat
from pathlib import Path

import pytest
from conftest import Env
from tunnelkit import EgressServer, client_tls, connect_via_proxy, egress_config, running

HOST = "localhost"  # the name in the egress serving certificate


async def _echo_through(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"ECHO\nping through the tunnel")
    await writer.drain()
    writer.write_eof() if writer.can_write_eof() else None
    got = await asyncio.wait_for(reader.readexactly(len(b"ECHO\nping through the tunnel")), 10)
    assert got == b"ECHO\nping through the tunnel"


async def test_connect_over_unix_socket(env: Env, short_tmp: Path) -> None:
    uds = short_tmp / "egress.sock"
    egress = EgressServer(egress_config(env.pki, uds), env.server)
    async with running(egress.run(), "egress"):
        await egress.wait_started()
        assert stat.S_IMODE(uds.stat().st_mode) == 0o600
        status, _, reader, writer = await connect_via_proxy(
            lambda: asyncio.open_unix_connection(str(uds)), f"{env.ip}:{env.port}"
        )
        assert status == 200
        await _echo_through(reader, writer)
        # Half-close travelled: the target saw EOF and closed its side, so we read EOF too.
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()

        # By node name, as kube-apiserver does with --kubelet-preferred-address-types=Hostname.
        status, _, reader, writer = await connect_via_proxy(
            lambda: asyncio.open_unix_connection(str(uds)), f"{env.node}:{env.port}"
        )
        assert status == 200
        await _echo_through(reader, writer)
        writer.close()
    assert not uds.exists()


@pytest.mark.parametrize(
    ("target", "status", "words"),
    [
        ("{ip}:22", 403, "port 22 is not a tunnel port"),
        ("10.200.0.1:{port}", 403, "not an address of any node"),
        ("edge-2:{port}", 503, "no tunnel agent is connected for node edge-2"),
        ("nonsense", 400, "bad CONNECT target"),
    ],
)
async def test_connect_refusals(env: Env, short_tmp: Path, target: str, status: int, words: str) -> None:
    uds = short_tmp / "egress.sock"
    egress = EgressServer(egress_config(env.pki, uds), env.server)
    async with running(egress.run(), "egress"):
        await egress.wait_started()
        got, body, _, writer = await connect_via_proxy(
            lambda: asyncio.open_unix_connection(str(uds)), target.format(ip=env.ip, port=env.port)
        )
        writer.close()
    assert got == status
    assert words in body.decode()
    assert body.count(b"\n") == 1  # one line


async def test_not_a_forward_proxy(env: Env, short_tmp: Path) -> None:
    uds = short_tmp / "egress.sock"
    egress = EgressServer(egress_config(env.pki, uds), env.server)
    async with running(egress.run(), "egress"):
        await egress.wait_started()
        reader, writer = await asyncio.open_unix_connection(str(uds))
        writer.write(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
        head = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert head.startswith(b"HTTP/1.1 405 ")


async def test_connect_over_tls_requires_client_cert(env: Env) -> None:
    egress = EgressServer(egress_config(env.pki, None, tls=True), env.server)
    async with running(egress.run(), "egress"):
        await egress.wait_started()
        port = egress.tls_port

        status, _, reader, writer = await connect_via_proxy(
            lambda: asyncio.open_connection(
                "127.0.0.1", port, ssl=client_tls(env.pki), server_hostname="localhost"
            ),
            f"{env.ip}:{env.port}",
        )
        assert status == 200
        writer.write(b"ECHO\nover tls")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(len(b"ECHO\nover tls")), 10) == b"ECHO\nover tls"
        writer.close()

        # Without a client certificate the handshake fails (TLS 1.3: seen on the first read).
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await connect_via_proxy(
                lambda: asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_tls(env.pki, with_cert=False), server_hostname=HOST
                ),
                f"{env.ip}:{env.port}",
            )


async def test_tls_allowed_names(env: Env) -> None:
    egress = EgressServer(egress_config(env.pki, None, tls=True, allowed_names=("someone-else",)), env.server)
    async with running(egress.run(), "egress"):
        await egress.wait_started()
        status, body, _, writer = await connect_via_proxy(
            lambda: asyncio.open_connection(
                "127.0.0.1", egress.tls_port, ssl=client_tls(env.pki), server_hostname="localhost"
            ),
            f"{env.ip}:{env.port}",
        )
        writer.close()
    assert status == 403 and b"kube-apiserver" in body
