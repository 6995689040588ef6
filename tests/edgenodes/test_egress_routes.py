"""kube-apiserver's view of the egress: HTTP CONNECT on aggapi's unix socket reaches edge nodes only
through their tunnel, other allowed destinations directly, and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

from edgekit import EN, EdgeEnv, SimNode, eventually, node_labels, sim_node, unique
from support.aggapi import Api


async def _connect(
    env: EdgeEnv, target: str
) -> tuple[int, bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(env.egress_uds))
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
    status = int(head.split(b" ", 2)[1])
    body = b"" if status == 200 else await asyncio.wait_for(reader.read(), 10)
    return status, body, reader, writer


async def _kubelet_healthz(env: EdgeEnv, node: SimNode, target: str) -> bytes:
    """GET /healthz over TLS to the kubelet, inside a CONNECT tunnel, as kube-apiserver would."""
    status, body, reader, writer = await _connect(env, target)
    assert status == 200, body
    ctx = ssl.create_default_context(cafile=str(env.pki.files["kubelet-ca"]))
    ctx.load_cert_chain(str(env.pki.files["kubelet-client.crt"]), str(env.pki.files["kubelet-client.key"]))
    await writer.start_tls(ctx, server_hostname=node.address)
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: {node.address}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


@contextlib.asynccontextmanager
async def echo_server(host: str) -> AsyncIterator[int]:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    server = await asyncio.start_server(echo, host, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_edge_node_through_tunnel_others_direct_or_refused(
    edge_env: EdgeEnv, api: Api, tmp_path: Path
) -> None:
    edge, cloud = unique("eg-edge"), unique("eg-cloud")
    hostname = f"{edge}.host.example"
    async with (
        sim_node(edge_env, tmp_path, edge, labels=node_labels(True), hostname=hostname) as node,
        sim_node(edge_env, tmp_path, cloud, labels=node_labels(False), agent=False) as cloud_node,
        echo_server("127.0.2.9") as echo_port,
    ):

        async def connected() -> bool:
            code, obj = await api.get(f"{EN}/{edge}")
            return code == 200 and obj["status"]["tunnel"]["state"] == "Connected"

        await eventually(connected, "edge node connected")
        assert node.agent is not None
        before = node.agent.metrics.connections_total
        # By name, by InternalIP, by the Node's Hostname address (kube-apiserver's first preference).
        for target in (f"{edge}:10250", f"{node.address}:10250", f"{hostname}:10250"):
            assert b" 200 " in (await _kubelet_healthz(edge_env, node, target)).split(b"\r\n")[0]
        assert node.agent.metrics.connections_total == before + 3  # all through the agent

        # A cloud node (no agent, not an edge node) whose address is allowed: dialled directly.
        cloud_tunnel = cloud_node.agent
        assert cloud_tunnel is None
        assert b" 200 " in (await _kubelet_healthz(edge_env, cloud_node, f"{cloud}:10250")).split(b"\r\n")[0]

        # Some other service in an allowed range: direct; bytes go both ways.
        status, _, reader, writer = await _connect(edge_env, f"127.0.2.9:{echo_port}")
        assert status == 200
        writer.write(b"ping\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"ping\n"
        writer.close()

        # Outside the ranges, or a name that resolves outside them: refused with the reason.
        status, body, _, w = await _connect(edge_env, f"127.0.3.1:{echo_port}")
        w.close()
        assert status == 403 and b"not a node that has a tunnel agent" in body
        status, body, _, w = await _connect(edge_env, f"localhost:{echo_port}")
        w.close()
        assert status == 403 and b"outside --egress-direct-cidrs" in body

        # The edge node's agent goes away: its address is in an allowed range, but an edge node is only
        # ever reached through its tunnel.
        await node.stop_agent()

        async def disconnected() -> bool:
            _, obj = await api.get(f"{EN}/{edge}")
            return obj["status"]["tunnel"]["state"] == "Disconnected"

        await eventually(disconnected, "edge node disconnected")
        for target in (f"{edge}:10250", f"{node.address}:10250"):
            status, body, _, w = await _connect(edge_env, target)
            w.close()
            assert status == 503 and b"no tunnel agent is connected" in body, (target, body)
