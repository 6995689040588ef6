"""HTTP CONNECT egress (what kube-apiserver's EgressSelector talks to): unix socket, TLS with client certs."""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
from pathlib import Path

import pytest
from conftest import Env
from cryptography import x509
from tunnelkit import EgressServer, client_tls, connect_via_proxy, egress_config, eventually, running

from certs.files import write_pair
from certs.pki import issue_serving

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


async def test_tls_certificate_is_reloaded_for_new_connections(env: Env, tmp_path: Path) -> None:
    """A renewed serving certificate is used by new connections; an open one keeps working."""
    cert, key = tmp_path / "egress.crt", tmp_path / "egress.key"
    cert.write_bytes(env.pki.files["server.crt"].read_bytes())
    key.write_bytes(env.pki.files["server.key"].read_bytes())
    cfg = egress_config(
        env.pki, None, tls=True, tls_cert_file=cert, tls_key_file=key, cert_reload_interval=0.05
    )
    egress = EgressServer(cfg, env.server)

    async def served_serial() -> int:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", egress.tls_port, ssl=client_tls(env.pki), server_hostname="localhost"
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return x509.load_der_x509_certificate(der).serial_number

    async with running(egress.run(), "egress"):
        await egress.wait_started()
        before = await served_serial()
        status, _, reader, writer = await connect_via_proxy(
            lambda: asyncio.open_connection(
                "127.0.0.1", egress.tls_port, ssl=client_tls(env.pki), server_hostname="localhost"
            ),
            f"{env.ip}:{env.port}",
        )
        assert status == 200
        # Mid-rotation (the key of another pair): not loaded, still served with the old one.
        renewed = issue_serving(
            env.pki.server_ca, common_name="egress", dns_names=["localhost"], ips=["127.0.0.1"]
        )
        write_pair(renewed, tmp_path / "next.crt", tmp_path / "next.key")
        os.replace(tmp_path / "next.crt", cert)
        await asyncio.sleep(0.3)
        assert egress.tls_reloads == 0 and await served_serial() == before
        os.replace(tmp_path / "next.key", key)
        await eventually(lambda: egress.tls_reloads == 1, "egress TLS reloaded")
        assert await served_serial() == renewed.cert.serial_number != before
        writer.write(b"ECHO\nstill open")  # the connection made before the reload carries on
        await writer.drain()
        async with asyncio.timeout(10):
            assert await reader.readexactly(len(b"ECHO\nstill open")) == b"ECHO\nstill open"
        writer.close()
