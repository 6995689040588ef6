from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tunnelkit import (
    PKI,
    StaticNodes,
    TunnelAgent,
    TunnelServer,
    agent_config,
    eventually,
    free_port,
    make_pki,
    running,
    server_config,
    target_server,
)


@pytest.fixture(scope="session")
def tunnel_pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("tunnel-pki"))


@pytest.fixture
def node_ip() -> str:
    # Each edge node has its own loopback address (127.0.1.N); a random N keeps tests apart.
    return f"127.0.1.{random.randint(20, 250)}"


@dataclass
class Env:
    pki: PKI
    server: TunnelServer
    agent: TunnelAgent
    nodes: StaticNodes
    node: str
    ip: str
    port: int  # the target's port
    endpoint: str
    refused_port: int  # allowed everywhere, but nothing listens there


@pytest.fixture
async def env(tunnel_pki: PKI, node_ip: str) -> AsyncIterator[Env]:
    """A tunnel server, one node's agent, and an echo target on the node's address."""
    refused = free_port(node_ip)
    async with target_server(node_ip) as (_, port):
        nodes = StaticNodes({"edge-1": {node_ip, "10.9.9.9"}, "edge-2": {"127.0.1.2"}})
        server = TunnelServer(server_config(tunnel_pki, allowed_ports=frozenset({port, refused})), nodes)
        async with running(server.run(), "test-tunnel-server"):
            await server.wait_started()
            endpoint = f"127.0.0.1:{server.port}"
            allow = ((node_ip, port), (node_ip, refused))
            agent = TunnelAgent(agent_config(tunnel_pki, "edge-1", node_ip, [endpoint], allow=allow))
            async with running(agent.run(), "test-tunnel-agent"):
                await eventually(lambda: "edge-1" in server.agents(), "agent registered")
                yield Env(tunnel_pki, server, agent, nodes, "edge-1", node_ip, port, endpoint, refused)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory for unix sockets (their paths are limited to ~107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="tun-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
