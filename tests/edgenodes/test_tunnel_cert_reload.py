"""The tunnel server picks up a rotated serving certificate on the next agent handshake, without a
restart; a half-written rotation (key not matching) keeps the old one."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

from aggapi.tunnel import TunnelServer, TunnelServerConfig
from certs.files import write_pair, write_pem_atomic
from certs.pki import issue_client, issue_serving, new_ca


class NoNodes:
    async def addresses(self, node: str) -> set[str] | None:
        return None


async def served_cn(port: int, ctx: ssl.SSLContext) -> str:
    _, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 10
    )
    cert = writer.get_extra_info("peercert")
    writer.transport.abort()  # no TLS close handshake: gRPC would wait for an HTTP/2 preface first
    return str(dict(x[0] for x in cert["subject"])["commonName"])


async def test_rotated_certificate_is_served_to_new_connections(tmp_path: Path) -> None:
    server_ca, agent_ca = new_ca("tunnel-server-ca"), new_ca("agent-ca")
    (tmp_path / "agent-ca.crt").write_bytes(agent_ca.cert_pem())
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    write_pair(issue_serving(server_ca, common_name="tunnel-1", dns_names=["localhost"]), cert, key)
    node_pair = issue_client(agent_ca, common_name="system:node:n1", organizations=["system:nodes"])
    write_pair(node_pair, tmp_path / "n1.crt", tmp_path / "n1.key")
    ctx = ssl.create_default_context(cadata=server_ca.cert_pem().decode())
    ctx.load_cert_chain(str(tmp_path / "n1.crt"), str(tmp_path / "n1.key"))
    ctx.set_alpn_protocols(["h2"])

    server = TunnelServer(
        TunnelServerConfig(cert, key, tmp_path / "agent-ca.crt", port=0, shutdown_grace=0.1), NoNodes()
    )
    task = asyncio.create_task(server.run())
    try:
        await asyncio.wait_for(server.wait_started(), 10)
        assert await served_cn(server.port, ctx) == "tunnel-1"
        write_pair(issue_serving(server_ca, common_name="tunnel-2", dns_names=["localhost"]), cert, key)
        assert await served_cn(server.port, ctx) == "tunnel-2"
        # Mid-rotation: a new certificate whose key is not there yet. The last good pair stays in use.
        other = issue_serving(server_ca, common_name="tunnel-3", dns_names=["localhost"])
        write_pem_atomic(cert, other.cert_pem(), private=False)
        assert await served_cn(server.port, ctx) == "tunnel-2"
        write_pem_atomic(key, other.key_pem(), private=True)
        assert await served_cn(server.port, ctx) == "tunnel-3"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
