"""The agent's --metrics-bind-address: Prometheus text at /metrics and liveness at /healthz, scraped with
urllib from a real server + agent on loopback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
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

from aggapi.tunnel import DialError
from edge.tunnel import cli
from edge.tunnel.metrics import AgentMetrics, registry_for
from edge.tunnel.statusserver import StatusServer

P = "aggapi_tunnel_agent_"


@dataclass
class Lab:
    server: TunnelServer
    agent: TunnelAgent
    ip: str
    port: int
    refused: int
    base: str  # http://host:port of the agent's status server


@pytest.fixture
async def lab(tunnel_pki: PKI, node_ip: str) -> AsyncIterator[Lab]:
    refused = free_port(node_ip)
    async with target_server(node_ip) as (_, port):
        nodes = StaticNodes({"edge-1": {node_ip}})
        server = TunnelServer(server_config(tunnel_pki, allowed_ports=frozenset({port, refused})), nodes)
        async with running(server.run(), "test-tunnel-server"):
            await server.wait_started()
            allow = ((node_ip, port), (node_ip, refused))
            cfg = agent_config(
                tunnel_pki,
                "edge-1",
                node_ip,
                [f"127.0.0.1:{server.port}"],
                allow=allow,
                metrics_bind_address="127.0.0.1:0",
            )
            agent = TunnelAgent(cfg)
            async with running(agent.run(), "test-tunnel-agent"):
                await eventually(lambda: "edge-1" in server.agents(), "agent registered")
                assert agent.status_address is not None
                host, status_port = agent.status_address
                yield Lab(server, agent, node_ip, port, refused, f"http://{host}:{status_port}")


def _get(url: str, accept: str = "") -> tuple[int, str, str]:
    """(status, content type, body); blocking, so call it in a thread (the server shares the test's loop)."""
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers["Content-Type"], e.read().decode()


async def get(url: str, accept: str = "") -> tuple[int, str, str]:
    return await asyncio.to_thread(_get, url, accept)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(base: str) -> Samples:
    status, ctype, body = await get(base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain"), (status, ctype)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(P + name, tuple(sorted(labels.items())))]


async def test_metrics_count_links_dials_and_bytes(lab: Lab) -> None:
    before = await scrape(lab.base)
    endpoint = lab.agent.links()[0].endpoint
    assert value(before, "server_connected", server=endpoint) == 1
    assert sum(v for (name, _), v in before.items() if name == P + "server_connected") == 1
    assert value(before, "dials_total", result="ok") == 0
    assert value(before, "dials_total", result="refused") == 0  # every result is there from the start
    assert value(before, "connections_active") == 0
    assert value(before, "sessions_total") == 1
    for name in ("reconnects_total", "cert_reloads_total", "bytes_to_server_total"):
        assert value(before, name) == 0

    conn = await lab.server.dial(lab.ip, lab.port, timeout=10)
    await conn.write(b"hello\n")
    assert await conn.read(100) == b"hello\n"
    during = await scrape(lab.base)
    assert value(during, "connections_active") == 1
    assert value(during, "dials_total", result="ok") == 1
    await conn.close()
    with pytest.raises(DialError):
        await lab.server.dial(lab.ip, lab.refused, timeout=5)
    await eventually(lambda: lab.agent.metrics.connections_active == 0, "connection released")

    after = await scrape(lab.base)
    assert value(after, "dials_total", result="ok") == 1
    assert value(after, "dials_total", result="refused") == 1
    assert value(after, "connections_active") == 0
    assert value(after, "bytes_to_server_total") >= len(b"hello\n")  # the echo, target → server
    assert value(after, "bytes_from_server_total") >= len(b"hello\n")


async def test_healthz_and_other_paths(lab: Lab) -> None:
    assert await get(lab.base + "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    status, _, _ = await get(lab.base + "/nope")
    assert status == 404
    status, ctype, body = await get(
        lab.base + "/metrics", accept="application/openmetrics-text; version=1.0.0"
    )
    assert status == 200 and ctype.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")


async def test_healthz_fails_when_a_loop_stopped_and_server_stops_with_the_agent(
    tunnel_pki: PKI, node_ip: str
) -> None:
    cfg = agent_config(tunnel_pki, "edge-1", node_ip, ["127.0.0.1:1"], metrics_bind_address="127.0.0.1:0")
    agent = TunnelAgent(cfg)
    async with running(agent.run(), "agent"):
        await eventually(lambda: agent.status_address is not None, "status server listening")
        assert agent.status_address is not None
        host, port = agent.status_address
        base = f"http://{host}:{port}"
        # No server answers: the link is backing off, which is alive.
        await eventually(lambda: agent.metrics.reconnects > 0, "link retried")
        assert await get(base + "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
        assert value(await scrape(base), "reconnects_total") >= 1
        _, task = agent._links["127.0.0.1:1"]
        task.cancel()  # what a crashed link loop looks like from outside
        await eventually(task.done, "link task ended")
        status, _, body = await get(base + "/healthz")
        assert status == 500 and "link to 127.0.0.1:1 stopped" in body
    assert agent.status_address is None
    with pytest.raises(OSError), socket.create_connection((host, port), timeout=5):
        pass  # the listener closed with run()


async def test_status_server_answers_500_and_rejects_methods() -> None:
    problem: list[str] = []
    server = StatusServer(CollectorRegistry(), lambda: problem[0] if problem else None, timeout=5)
    await server.start("127.0.0.1", 0)
    host, port = server.address
    async with running(server.serve(), "status"):
        base = f"http://{host}:{port}"
        assert (await get(base + "/healthz"))[0] == 200
        problem.append("the tunnel agent is not running")
        assert await get(base + "/healthz") == (
            500,
            "text/plain; charset=utf-8",
            "unhealthy: the tunnel agent is not running\n",
        )
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 405 ")
        writer.close()
        # A client that never finishes its request is held open; stopping the server ends it.
        idle_reader, idle_writer = await asyncio.open_connection(host, port)
        idle_writer.write(b"GET /metrics HTTP/1.1\r\n")
        await idle_writer.drain()
    with contextlib.suppress(ConnectionResetError):  # a reset is also an end
        assert await asyncio.wait_for(idle_reader.read(), 10) == b""
    idle_writer.close()


def test_registry_is_per_agent_and_maps_the_counters() -> None:
    m = AgentMetrics(connections_total=3, bytes_to_server=10, cert_reloads=2, reconnects=4)
    m.dial_failures["TOO_MANY"] += 5
    other = registry_for(AgentMetrics(), list)
    registry = registry_for(m, lambda: [("a:1", True), ("b:2", False)])
    assert registry.get_sample_value(P + "dials_total", {"result": "ok"}) == 3
    assert registry.get_sample_value(P + "dials_total", {"result": "too_many"}) == 5
    assert registry.get_sample_value(P + "server_connected", {"server": "b:2"}) == 0
    assert registry.get_sample_value(P + "bytes_to_server_total") == 10
    assert registry.get_sample_value(P + "cert_reloads_total") == 2
    assert registry.get_sample_value(P + "reconnects_total") == 4
    assert other.get_sample_value(P + "dials_total", {"result": "ok"}) == 0


def test_flag_default_empty_and_validation() -> None:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    required = ["tunnel-agent", "--server", "s:8091", "--node-name", "n", "--address", "10.0.0.1"]
    required += ["--cert", "c", "--key", "k", "--ca", "a"]
    assert cli.config_from(parser.parse_args(required)).metrics_bind_address == "127.0.0.1:10265"
    off = cli.config_from(parser.parse_args([*required, "--metrics-bind-address", ""]))
    assert off.metrics_bind_address == "" and off.validate() == []
    bad = cli.config_from(parser.parse_args([*required, "--metrics-bind-address", "10265"]))
    assert any(e.startswith("--metrics-bind-address:") for e in bad.validate())
    v6 = cli.config_from(parser.parse_args([*required, "--metrics-bind-address", "[::1]:0"]))
    assert v6.validate() == []
