"""Restarts, several replicas, certificate rotation and a wedged agent: the tunnel recovers by itself."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from tunnelkit import (
    PKI,
    StaticNodes,
    TunnelAgent,
    TunnelServer,
    agent_config,
    eventually,
    free_port,
    running,
    server_config,
    target_server,
)

from aggapi.tunnel import DialError, TunnelConn
from edge.tunnel.protocol import pb, pb_grpc

REPO = Path(__file__).resolve().parents[2]


async def _echo(conn: TunnelConn, payload: bytes = b"ping\n") -> None:
    await conn.write(payload)
    got = b""
    while len(got) < len(payload):
        got += await conn.read()
    assert got == payload
    await conn.close()


async def _dial_eventually(server: TunnelServer, host: str, port: int) -> None:
    async def ok() -> bool:
        try:
            conn = await server.dial(host, port, timeout=5)
        except DialError:
            return False
        await _echo(conn)
        return True

    await eventually(ok, f"dial {host}:{port} through {server.server_id}")


def _agent_process(pki: PKI, node: str, ip: str, endpoint: str, port: int) -> subprocess.Popen[bytes]:
    cert, key = pki.node_cert(node)
    args = [sys.executable, "-m", "edge", "tunnel-agent", "--server", endpoint, "--node-name", node]
    args += ["--cert", str(cert), "--key", str(key), "--ca", str(pki.files["server-ca"]), "--address", ip]
    args += ["--allow", f"{ip}:{port}", "--backoff-initial", "0.05", "--backoff-max", "0.5"]
    args += ["--metrics-bind-address", f"{ip}:0"]  # its own address: never clashes with another agent
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(timeout=15)


async def test_agent_process_killed_and_restarted(tunnel_pki: PKI, node_ip: str) -> None:
    async with target_server(node_ip) as (_, port):
        server = TunnelServer(
            server_config(tunnel_pki, allowed_ports=frozenset({port})), StaticNodes({"edge-1": {node_ip}})
        )
        async with running(server.run(), "server"):
            await server.wait_started()
            endpoint = f"127.0.0.1:{server.port}"
            proc = _agent_process(tunnel_pki, "edge-1", node_ip, endpoint, port)
            try:
                await _dial_eventually(server, node_ip, port)
                _stop(proc, signal.SIGKILL)
                await eventually(lambda: "edge-1" not in server.agents(), "dead agent unregistered")
                with pytest.raises(DialError) as err:
                    await server.dial(node_ip, port)
                assert err.value.status == 503
                proc = _agent_process(tunnel_pki, "edge-1", node_ip, endpoint, port)
                await _dial_eventually(server, node_ip, port)
            finally:
                _stop(proc)
            assert proc.returncode == 0  # SIGTERM: a clean shutdown


async def test_server_restarted_agent_reconnects(tunnel_pki: PKI, node_ip: str) -> None:
    port_agents = free_port()
    async with target_server(node_ip) as (_, port):
        nodes = StaticNodes({"edge-1": {node_ip}})
        cfg = server_config(tunnel_pki, allowed_ports=frozenset({port}), port=port_agents)
        agent = TunnelAgent(agent_config(tunnel_pki, "edge-1", node_ip, [f"127.0.0.1:{port_agents}"]))
        agent = TunnelAgent(replace(agent.config, allow=((node_ip, port),)))
        async with running(agent.run(), "agent"):
            for _ in range(2):
                server = TunnelServer(cfg, nodes)
                async with running(server.run(), "server"):
                    await _dial_eventually(server, node_ip, port)
            assert agent.metrics.sessions_established >= 2


async def test_two_replicas_one_agent(tunnel_pki: PKI, node_ip: str) -> None:
    """The agent is told only about replica A; A's Welcome names B; dials work on both."""
    pa, pb_ = free_port(), free_port()
    async with target_server(node_ip) as (_, port):
        nodes = StaticNodes({"edge-1": {node_ip}})
        peers = (f"127.0.0.1:{pa}", f"127.0.0.1:{pb_}")  # the full list, self included, as from a Service
        a = TunnelServer(
            server_config(tunnel_pki, allowed_ports=frozenset({port}), port=pa, peers=peers), nodes
        )
        b = TunnelServer(
            server_config(tunnel_pki, allowed_ports=frozenset({port}), port=pb_, peers=peers), nodes
        )
        cfg = agent_config(tunnel_pki, "edge-1", node_ip, [f"localhost:{pa}"], allow=((node_ip, port),))
        agent = TunnelAgent(cfg)
        async with running(a.run(), "a"), running(b.run(), "b"), running(agent.run(), "agent"):
            await _dial_eventually(a, node_ip, port)
            await _dial_eventually(b, node_ip, port)
            # localhost:pa and 127.0.0.1:pa are one replica: used once, the alias is left idle.
            await eventually(lambda: len(agent.connected_servers()) == 2, "one session per replica")
            await eventually(
                lambda: any("another endpoint" in link.last_error for link in agent.links()), "alias detected"
            )
            established = agent.metrics.sessions_established
            await _dial_eventually(a, node_ip, port)
            assert {link.server_id for link in agent.links() if link.connected} == {a.server_id, b.server_id}
            assert agent.metrics.sessions_established == established  # no flapping between the aliases


async def test_peers_announced_later_are_linked(tunnel_pki: PKI, node_ip: str) -> None:
    async with target_server(node_ip) as (_, port):
        nodes = StaticNodes({"edge-1": {node_ip}})
        a = TunnelServer(server_config(tunnel_pki, allowed_ports=frozenset({port})), nodes)
        b = TunnelServer(server_config(tunnel_pki, allowed_ports=frozenset({port})), nodes)
        async with running(a.run(), "a"), running(b.run(), "b"):
            await a.wait_started()
            await b.wait_started()
            cfg = agent_config(
                tunnel_pki, "edge-1", node_ip, [f"127.0.0.1:{a.port}"], allow=((node_ip, port),)
            )
            agent = TunnelAgent(cfg)
            async with running(agent.run(), "agent"):
                await _dial_eventually(a, node_ip, port)
                assert "edge-1" not in b.agents()
                a.set_peers([f"127.0.0.1:{b.port}"])  # a new replica came up
                await _dial_eventually(b, node_ip, port)
                a.set_peers([])  # and went away again: the agent unlinks it
                await eventually(lambda: len(agent.links()) == 1, "peer unlinked")
                await eventually(lambda: "edge-1" not in b.agents(), "session with b closed")


async def test_cert_files_replaced_agent_reconnects_with_them(
    tunnel_pki: PKI, node_ip: str, tmp_path: Path
) -> None:
    async with target_server(node_ip) as (_, port):
        server = TunnelServer(
            server_config(tunnel_pki, allowed_ports=frozenset({port})), StaticNodes({"edge-1": {node_ip}})
        )
        async with running(server.run(), "server"):
            await server.wait_started()
            cert = tunnel_pki.node_cert("edge-1", name="rotating")
            cfg = agent_config(
                tunnel_pki,
                "edge-1",
                node_ip,
                [f"127.0.0.1:{server.port}"],
                cert=cert,
                cert_check_interval=0.05,
            )
            agent = TunnelAgent(replace(cfg, allow=((node_ip, port),)))
            async with running(agent.run(), "agent"):
                await _dial_eventually(server, node_ip, port)
                open_conn = await server.dial(node_ip, port)  # must survive the rotation
                since = server.agents()["edge-1"].connected_since
                tunnel_pki.node_cert("edge-1", name="rotating")  # new key and cert, atomically replaced
                await eventually(lambda: agent.metrics.cert_reloads == 1, "rotation noticed")
                await eventually(
                    lambda: (
                        "edge-1" in server.agents() and server.agents()["edge-1"].connected_since != since
                    ),
                    "new session",
                )
                await _dial_eventually(server, node_ip, port)
                await _echo(open_conn, b"still here\n")


async def test_wedged_agent_dial_times_out_and_is_cleaned(tunnel_pki: PKI, node_ip: str) -> None:
    """An agent that says Hello and then ignores Dials: the dial ends with 504 and nothing stays pending."""
    server = TunnelServer(server_config(tunnel_pki), StaticNodes({"edge-1": {node_ip}}))
    async with running(server.run(), "server"):
        await server.wait_started()
        cert, key = tunnel_pki.node_cert("edge-1", name="wedged")
        creds = grpc.ssl_channel_credentials(
            tunnel_pki.files["server-ca"].read_bytes(), key.read_bytes(), cert.read_bytes()
        )
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", creds) as channel:
            call = pb_grpc.TunnelStub(channel).Control()
            hello = pb.Hello(
                node_name="edge-1", addresses=[node_ip], allowed=[pb.Target(host=node_ip, port=10250)]
            )
            await call.write(pb.AgentMessage(hello=hello))
            assert (await asyncio.wait_for(call.read(), 10)).WhichOneof("msg") == "welcome"
            with pytest.raises(DialError) as err:
                await server.dial(node_ip, 10250, timeout=0.3)
            assert err.value.status == 504
            # An abandoned dial (caller cancelled) is cleaned too.
            task = asyncio.create_task(server.dial(node_ip, 10250, timeout=30))
            await eventually(lambda: server.stats().pending_dials == 1, "dial pending")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert server.stats().pending_dials == 0
            # The agent goes away during a dial: the dial fails at once with 502.
            task = asyncio.create_task(server.dial(node_ip, 10250, timeout=30))
            await eventually(lambda: server.stats().pending_dials == 1, "dial pending")
            # Like an agent process dying: the stream and its TCP connection go. (A cancelled stream
            # alone reaches the server as RST_STREAM, which grpc's aio server was once seen to miss
            # under CI load; the server then notices only by the ping silence, 40 s by default.)
            call.cancel()
            await channel.close()
            with pytest.raises(DialError) as err:
                await task
            assert err.value.status == 502
            assert server.stats().pending_dials == 0
