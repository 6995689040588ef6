"""Round trips, half-close, refusals and identity checks through a real server and agent on loopback."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import pytest
from conftest import Env
from tunnelkit import (
    PKI,
    StaticNodes,
    TunnelServer,
    agent_config,
    eventually,
    free_port,
    running,
    server_config,
    target_server,
)

from aggapi.tunnel import DialError
from edge.tunnel.agent import TunnelAgent
from edge.tunnel.protocol import CONN_ID_METADATA, node_from_identity, pb, pb_grpc, split_hostport


async def test_round_trip_by_ip_and_by_name(env: Env) -> None:
    for host in (env.ip, env.node):
        conn = await env.server.dial(host, env.port, timeout=10)
        await conn.write(b"hello\n")
        assert await conn.read(100) == b"hello\n"
        payload = bytes(range(256)) * 1000
        await conn.write(payload)
        got = b""
        while len(got) < len(payload):
            got += await conn.read(100_000)
        assert got == payload
        await conn.close()
    info = env.server.agents()["edge-1"]
    assert info.addresses == (env.ip,)
    assert info.agent_version


async def test_half_close_passes_eof_both_ways(env: Env) -> None:
    conn = await env.server.dial(env.ip, env.port)
    await conn.write(b"ECHO\nlast words")
    await conn.close_write()  # the target sees EOF, echoes what it had, then half-closes back
    got = b""
    while data := await conn.read():
        got += data
    assert got == b"ECHO\nlast words"
    await conn.close()
    await eventually(lambda: env.server.stats().active_connections == 0, "connection released")
    await eventually(lambda: env.agent.metrics.connections_active == 0, "agent connection released")


async def test_refusals_have_status_and_reason(env: Env) -> None:
    cases = [
        ((env.ip, 22), 403, "port 22"),
        (("10.1.2.3", env.port), 403, "not an address"),
        (("no-such-node", env.port), 403, "not a node"),
        (("edge-2", env.port), 503, "no tunnel agent"),
        (("10.9.9.9", env.port), 403, "not an address"),  # on the Node, but the agent did not announce it
    ]
    for (host, port), status, words in cases:
        with pytest.raises(DialError) as err:
            await env.server.dial(host, port, timeout=5)
        assert err.value.status == status, err.value
        assert words in err.value.message


async def test_agent_allow_list_limit_and_target_refusal(tunnel_pki: PKI, node_ip: str) -> None:
    refused, not_on_agent = free_port(node_ip), free_port(node_ip)
    async with target_server(node_ip) as (_, port):
        nodes = StaticNodes({"edge-1": {node_ip}})
        ports = frozenset({port, refused, not_on_agent})
        server = TunnelServer(server_config(tunnel_pki, allowed_ports=ports), nodes)
        async with running(server.run(), "server"):
            await server.wait_started()
            allow = ((node_ip, port), (node_ip, refused))
            cfg = agent_config(tunnel_pki, "edge-1", node_ip, [f"127.0.0.1:{server.port}"], allow=allow)
            agent = TunnelAgent(replace(cfg, max_connections=2))
            async with running(agent.run(), "agent"):
                await eventually(lambda: "edge-1" in server.agents(), "agent registered")
                with pytest.raises(DialError) as err:
                    await server.dial(node_ip, not_on_agent, timeout=5)
                assert err.value.status == 403 and "does not allow" in err.value.message
                with pytest.raises(DialError) as err:
                    await server.dial(node_ip, refused, timeout=5)
                assert err.value.status == 502 and "refused" in err.value.message
                held = [await server.dial("edge-1", port) for _ in range(2)]
                with pytest.raises(DialError) as err:
                    await server.dial("edge-1", port, timeout=5)
                assert err.value.status == 503 and "limit" in err.value.message
                await held[0].close()
                await eventually(lambda: agent.metrics.connections_active == 1, "slot released")
                again = await server.dial("edge-1", port)
                for c in (held[1], again):
                    await c.close()
                assert agent.metrics.dial_failures["REFUSED"] == 1
                assert agent.metrics.dial_failures["TOO_MANY"] == 1


async def test_hello_naming_another_node_is_refused(env: Env) -> None:
    # The certificate says edge-2; the agent claims to be edge-1 (whose real agent is connected).
    cert = env.pki.node_cert("edge-2", name="impostor")
    cfg = agent_config(env.pki, "edge-1", env.ip, [env.endpoint], cert=cert)
    impostor = TunnelAgent(cfg)
    before = env.server.agents()["edge-1"].connected_since
    async with running(impostor.run(), "impostor"):
        await eventually(lambda: _error_has(impostor, "PERMISSION_DENIED"), "impostor refused")
    assert "certificate is for node edge-2" in impostor.links()[0].last_error
    assert env.server.agents()["edge-1"].connected_since == before  # the real agent was not replaced
    assert "edge-2" not in env.server.agents()


async def test_unknown_node_and_foreign_addresses(env: Env) -> None:
    cfg = agent_config(env.pki, "ghost", "127.0.1.3", [env.endpoint])
    ghost = TunnelAgent(cfg)
    async with running(ghost.run(), "ghost"):
        await eventually(lambda: _error_has(ghost, "not known"), "unknown node refused")
    # edge-2 announcing edge-1's address keeps only its own.
    cfg2 = replace(
        agent_config(env.pki, "edge-2", "127.0.1.2", [env.endpoint]), addresses=("127.0.1.2", env.ip)
    )
    a2 = TunnelAgent(cfg2)
    async with running(a2.run(), "edge-2"):
        await eventually(lambda: "edge-2" in env.server.agents(), "edge-2 registered")
        info = env.server.agents()["edge-2"]
        assert info.addresses == ("127.0.1.2",)
        assert info.rejected_addresses == (env.ip,)
        conn = await env.server.dial(env.ip, env.port)  # still edge-1's
        assert conn.node == "edge-1"
        await conn.close()


async def test_stream_call_cannot_claim_foreign_or_unknown_dial(env: Env) -> None:
    """A Stream call must name a pending dial sent to the caller's own node."""
    creds = grpc.ssl_channel_credentials(
        env.pki.files["server-ca"].read_bytes(),
        *(p.read_bytes() for p in reversed(env.pki.node_cert("edge-2", name="edge2-raw"))),
    )
    async with grpc.aio.secure_channel(env.endpoint, creds) as channel:
        call = pb_grpc.TunnelStub(channel).Stream(metadata=((CONN_ID_METADATA, "0" * 32),))
        # The server may refuse before or after our first frame: either the write or the read fails.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.write(pb.Frame())
            async with asyncio.timeout(10):
                await call.read()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_protocol_helpers() -> None:
    assert split_hostport("10.0.0.1:10250") == ("10.0.0.1", 10250)
    assert split_hostport("[fd00::1]:10250") == ("fd00::1", 10250)
    assert split_hostport("node-a", default_port=1) == ("node-a", 1)
    for bad in ("10.0.0.1", "a:b", ":80", "[::1", "h:70000"):
        with pytest.raises(ValueError):
            split_hostport(bad)
    assert node_from_identity("system:node:a", ["system:nodes"]) == "a"
    assert node_from_identity("system:node:a", []) is None
    assert node_from_identity("admin", ["system:nodes"]) is None
    assert node_from_identity("system:node:", ["system:nodes"]) is None


def _error_has(agent: TunnelAgent, words: str) -> bool:
    return any(words in link.last_error for link in agent.links())
