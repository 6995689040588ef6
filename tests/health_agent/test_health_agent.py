from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from certs.files import write_pair
from certs.pki import CertKeyPair, issue_client, issue_peer, issue_serving, new_ca
from edge.health.agent import HealthAgent
from edge.health.config import HealthConfig
from edge.health.hysteresis import Hysteresis
from edge.health.members import MembersFeed, node_address
from edge.health.prober import Peer, Prober, ProbeResult
from edge.health.selection import PeerSelector


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture(scope="module")
def ca() -> CertKeyPair:
    return new_ca("health-test-ca")


@pytest.fixture
def ips() -> list[str]:
    base = random.randint(10, 200)
    return [f"127.0.1.{base + i}" for i in range(3)]


def node_config(
    ca: CertKeyPair, tmp: Path, name: str, ip: str, ports: tuple[int, int], **kw: Any
) -> HealthConfig:
    d = tmp / name
    d.mkdir(exist_ok=True)
    pair = issue_peer(ca, common_name=f"system:node:{name}", organizations=["system:nodes"], ips=[ip])
    write_pair(pair, d / "node.crt", d / "node.key")
    (d / "ca.crt").write_bytes(ca.cert_pem())
    return HealthConfig(
        node_name=name,
        address=ip,
        cert_file=d / "node.crt",
        key_file=d / "node.key",
        ca_file=d / "ca.crt",
        peer_port=ports[0],
        kubelet_port=ports[1],
        probe_timeout=2.0,
        **kw,
    )


@contextlib.asynccontextmanager
async def kubelets(ips: list[str], port: int) -> AsyncIterator[None]:
    async def handle(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    servers = [await asyncio.start_server(handle, ip, port) for ip in ips]
    try:
        yield
    finally:
        for s in servers:
            s.close()
            await s.wait_closed()


@contextlib.asynccontextmanager
async def pool(
    ca: CertKeyPair, tmp: Path, ips: list[str], **kw: Any
) -> AsyncIterator[tuple[list[HealthConfig], list[HealthAgent]]]:
    ports = (free_port(ips[0]), free_port(ips[0]))
    names = [f"edge-{i}" for i in range(len(ips))]
    peers = tuple(zip(names, ips, strict=True))
    hooks = kw.pop("hooks", {})
    configs = [node_config(ca, tmp, n, ip, ports, peers=peers, **kw) for n, ip in peers]
    agents = [HealthAgent(c, direct_probe=hooks.get(c.node_name), rng=random.Random(1)) for c in configs]
    async with kubelets(ips, ports[1]), contextlib.AsyncExitStack() as stack:
        for a in agents:
            await stack.enter_async_context(a.serving())
        yield configs, agents


def test_hysteresis_thresholds() -> None:
    h = Hysteresis(failure_threshold=3, success_threshold=2)
    assert h.record("b", True, {}, 1.0) == "Unknown"
    assert h.record("b", True, {}, 2.0) == "Healthy"
    assert h.record("b", False, {}, 3.0) == "Healthy"
    assert h.record("b", False, {}, 4.0) == "Healthy"
    assert h.record("b", True, {}, 5.0) == "Healthy"  # the failure streak is broken
    for t in (6.0, 7.0):
        assert h.record("b", False, {}, t) == "Healthy"
    assert h.record("b", False, {}, 8.0) == "Unhealthy"
    assert h.record("b", True, {}, 9.0) == "Unhealthy"
    assert h.record("b", True, {}, 10.0) == "Healthy"


@pytest.mark.parametrize(("n", "k"), [(10, 3), (7, 7), (5, 2), (2, 3), (200, 3)])
def test_selection_covers_every_peer_each_round(n: int, k: int) -> None:
    sel = PeerSelector(random.Random(n).shuffle)
    members = {f"n{i}" for i in range(n)}
    sel.set_members(members)
    periods = math.ceil(n / k)
    for _ in range(4):  # several rounds
        seen: set[str] = set()
        for _ in range(periods):
            picked = sel.next_period(k)
            assert len(picked) == min(k, n) == len(set(picked))
            seen |= set(picked)
        assert seen == members


async def test_agent_hysteresis_with_injected_clock(ca: CertKeyPair, tmp_path: Path, ips: list[str]) -> None:
    down: set[str] = set()

    async def hook(prober: Prober, peer: Peer) -> ProbeResult:
        if peer.name in down:
            return ProbeResult(False, {"kubelet": "refused", "agent": "refused"})
        return await prober.direct(peer)

    t = FakeTime()
    async with pool(ca, tmp_path, ips[:2], indirect_probes=0, hooks={"edge-0": hook}) as (_, agents):
        a = agents[0]
        a.clock = t.clock
        for want in ("Unknown", "Healthy"):
            await a.run_period()
            assert a.hysteresis.verdict("edge-1") == want
        assert a.hysteresis.peers["edge-1"].last_detail == {"kubelet": "ok", "agent": "ok"}
        healthy_vote = a.store.pending["edge-1"]
        assert healthy_vote["result"] == "Healthy"
        down.add("edge-1")
        await t.sleep(10)
        await a.run_period()
        # A suspect: still Healthy by hysteresis, but the newest round disagrees, so no vote is queued.
        assert a.hysteresis.verdict("edge-1") == "Healthy" and not a.hysteresis.settled("edge-1")
        assert a.store.pending["edge-1"] is healthy_vote
        await t.sleep(10)
        await a.run_period()
        assert a.hysteresis.verdict("edge-1") == "Unhealthy"
        assert a.store.pending["edge-1"]["result"] == "Unhealthy"
        assert a.hysteresis.peers["edge-1"].last_probed == t.now
        down.clear()
        for want in ("Unhealthy", "Healthy"):
            await a.run_period()
            assert a.hysteresis.verdict("edge-1") == want


async def test_a_suspect_is_probed_again_next_period(ca: CertKeyPair, tmp_path: Path, ips: list[str]) -> None:
    """k=1: round-robin alone would come back to a failing peer only a round later; a suspect is probed
    again in the very next period (besides the round-robin pick) until its verdict settles."""
    down = {"edge-2"}

    async def hook(prober: Prober, peer: Peer) -> ProbeResult:
        if peer.name in down:
            return ProbeResult(False, {"kubelet": "refused", "agent": "refused"})
        return await prober.direct(peer)

    async with pool(
        ca, tmp_path, ips[:3], indirect_probes=0, probes_per_period=1, hooks={"edge-0": hook}
    ) as (_, agents):
        a = agents[0]
        probed: list[list[str]] = []
        while "edge-2" not in (probed[-1] if probed else []):
            probed.append(await a.run_period())
        assert probed[-1] == ["edge-2"] and a.hysteresis.verdict("edge-2") == "Unknown"
        follow = await a.run_period()
        assert follow[0] != "edge-2" and follow[1:] == ["edge-2"], follow
        assert a.hysteresis.verdict("edge-2") == "Unhealthy" and a.hysteresis.settled("edge-2")
        assert a.store.pending["edge-2"]["result"] == "Unhealthy"
        assert "edge-2" not in a.hysteresis.unsettled()  # settled: back to round-robin only


async def test_kubelet_style_client_only_and_serving_only_certificates(
    ca: CertKeyPair, tmp_path: Path, ips: list[str]
) -> None:
    """A kubelet has a clientAuth-only client cert and a serverAuth-only serving cert: the agent serves its
    peer endpoint with the second (--serving-cert) and probes and votes with the first."""
    ports = (free_port(ips[0]), free_port(ips[0]))
    names = ["edge-0", "edge-1"]
    peers = tuple(zip(names, ips[:2], strict=True))
    configs = []
    for name, ip in peers:
        d = tmp_path / name
        d.mkdir()
        who = {"common_name": f"system:node:{name}", "organizations": ["system:nodes"]}
        write_pair(issue_client(ca, **who), d / "client.crt", d / "client.key")
        write_pair(issue_serving(ca, ips=[ip], **who), d / "serving.crt", d / "serving.key")
        (d / "ca.crt").write_bytes(ca.cert_pem())
        configs.append(
            HealthConfig(
                node_name=name,
                address=ip,
                cert_file=d / "client.crt",
                key_file=d / "client.key",
                ca_file=d / "ca.crt",
                serving_cert_file=d / "serving.crt",
                serving_key_file=d / "serving.key",
                peer_port=ports[0],
                kubelet_port=ports[1],
                peers=peers,
            )
        )
    for serving, ok in ((True, True), (False, False)):
        # Without --serving-cert, the client-only certificate serves, and peers refuse the handshake.
        cfgs = (
            configs
            if serving
            else [replace(c, serving_cert_file=None, serving_key_file=None) for c in configs]
        )
        agents = [HealthAgent(c, rng=random.Random(1)) for c in cfgs]
        async with kubelets(ips[:2], ports[1]), contextlib.AsyncExitStack() as stack:
            for a in agents:
                await stack.enter_async_context(a.serving())
            result = await agents[0].direct_probe(agents[0].members["edge-1"])
            assert result.ok is ok, result
            assert result.detail["kubelet"] == "ok" and (result.detail["agent"] == "ok") is ok, result


async def test_indirect_probe_saves_a_peer_with_a_blocked_direct_path(
    ca: CertKeyPair, tmp_path: Path, ips: list[str]
) -> None:
    async def blocked(prober: Prober, peer: Peer) -> ProbeResult:
        if peer.name == "edge-1":  # only edge-0 → edge-1 is cut
            return ProbeResult(False, {"kubelet": "blocked", "agent": "blocked"})
        return await prober.direct(peer)

    async with pool(ca, tmp_path, ips, indirect_probes=1, hooks={"edge-0": blocked}) as (_, agents):
        for _ in range(3):
            await agents[0].run_period()
        assert agents[0].hysteresis.verdict("edge-1") == "Healthy"
        detail = agents[0].hysteresis.peers["edge-1"].last_detail
        assert detail["kubelet"] == "blocked"
        assert detail["indirect"][0]["via"] == "edge-2" and detail["indirect"][0]["ok"] is True
        assert agents[2].server.indirect_served >= 1


async def test_indirect_probe_cannot_save_a_dead_peer(
    ca: CertKeyPair, tmp_path: Path, ips: list[str]
) -> None:
    async with pool(ca, tmp_path, ips, indirect_probes=1) as (_, agents):
        await agents[1].server.close()  # edge-1's agent is gone (its kubelet port still answers)
        for _ in range(3):
            await agents[0].run_period()
        assert agents[0].hysteresis.verdict("edge-1") == "Unhealthy"
        assert agents[0].hysteresis.verdict("edge-2") == "Healthy"


async def test_peer_endpoint_refuses_clients_without_a_node_cert(
    ca: CertKeyPair, tmp_path: Path, ips: list[str]
) -> None:
    async with pool(ca, tmp_path, ips[:1]) as (configs, _):
        port = configs[0].peer_port
        ctx = ssl.create_default_context(cadata=ca.cert_pem().decode())
        ctx.check_hostname = False
        with pytest.raises((ssl.SSLError, ConnectionError)):  # no client cert: handshake refused
            r, w = await asyncio.open_connection(ips[0], port, ssl=ctx)
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await w.drain()
            if not await r.read():
                raise ConnectionError("closed")
        user = issue_client(ca, common_name="alice", organizations=["system:masters"])
        d = tmp_path / "alice"
        d.mkdir()
        write_pair(user, d / "c.crt", d / "c.key")
        ctx.load_cert_chain(d / "c.crt", d / "c.key")
        r, w = await asyncio.open_connection(ips[0], port, ssl=ctx)
        w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await w.drain()
        assert (await r.read()).startswith(b"HTTP/1.1 403")
        w.close()


@contextlib.asynccontextmanager
async def vote_server(ca: CertKeyPair, tmp: Path, port: int) -> AsyncIterator[list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []

    async def post(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        cn = dict(x[0] for x in peer["subject"])["commonName"] if peer else ""
        got.append({"cert": cn, "path": request.path, **json.loads(await request.read())})
        return web.json_response({}, status=201)

    pair = issue_serving(ca, common_name="aggapi", ips=["127.0.0.1"])
    d = tmp / "votesrv"
    d.mkdir(exist_ok=True)
    write_pair(pair, d / "s.crt", d / "s.key")
    (d / "ca.crt").write_bytes(ca.cert_pem())
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(d / "ca.crt"))
    ctx.load_cert_chain(d / "s.crt", d / "s.key")
    ctx.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_post("/apis/edge.aggapi.io/v1alpha1/edgenodes/{target}/health", post)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    try:
        yield got
    finally:
        await runner.cleanup()


def vote_url(port: int) -> str:
    return f"https://127.0.0.1:{port}/apis/edge.aggapi.io/v1alpha1/edgenodes/{{target}}/health"


async def test_votes_are_posted(ca: CertKeyPair, tmp_path: Path, ips: list[str]) -> None:
    port = free_port("127.0.0.1")
    async with (
        vote_server(ca, tmp_path, port) as got,
        pool(ca, tmp_path, ips, vote_url=vote_url(port)) as (
            _,
            agents,
        ),
    ):
        for _ in range(2):
            await agents[0].run_period()
        assert await agents[0].flush()
        assert {(v["cert"], v["voter"], v["target"], v["result"]) for v in got} == {
            ("system:node:edge-0", "edge-0", t, "Healthy") for t in ("edge-1", "edge-2")
        }
        assert all(v["path"].endswith(f"/edgenodes/{v['target']}/health") for v in got)
        assert got[0]["probes"] == {"kubelet": "ok", "agent": "ok"}


async def test_votes_survive_a_cloud_outage_and_a_restart(
    ca: CertKeyPair, tmp_path: Path, ips: list[str]
) -> None:
    port = free_port("127.0.0.1")
    state = tmp_path / "state"
    async with pool(ca, tmp_path, ips, vote_url=vote_url(port), state_dir=state) as (configs, agents):
        for _ in range(2):
            await agents[0].run_period()
        assert not await agents[0].flush()  # nobody listens: kept
        kept = dict(agents[0].store.pending)
        assert set(kept) == {"edge-1", "edge-2"}
        assert (state / "pending-votes.json").exists()
        config0 = configs[0]
    restarted = HealthAgent(replace(config0, peers=()))  # no peers: only the recovered votes can be sent
    async with vote_server(ca, tmp_path, port) as got, restarted.serving():
        assert set(restarted.store.pending) == {"edge-1", "edge-2"}
        assert await restarted.flush()
        assert {(v["target"], v["observedAt"], v["result"]) for v in got} == {
            (t, v["observedAt"], v["result"]) for t, v in kept.items()
        }
    assert json.loads((state / "pending-votes.json").read_text()) == {"votes": []}


async def test_run_starts_and_stops_named_tasks(ca: CertKeyPair, tmp_path: Path, ips: list[str]) -> None:
    t = FakeTime()
    config = node_config(
        ca,
        tmp_path,
        "edge-0",
        ips[0],
        (free_port(ips[0]), free_port(ips[0])),
        peers=(("edge-1", ips[1]),),
        metrics_bind_address=f"{ips[0]}:0",
    )
    agent = HealthAgent(config, sleep=t.sleep, clock=t.clock)
    task = asyncio.create_task(agent.run(), name="test-health-agent")
    for _ in range(100):
        await asyncio.sleep(0.01)
        if agent.health() is None and agent.status_address is not None:
            break
    assert agent.health() is None
    assert agent.periods > 0
    assert agent.status_address is not None
    reader, writer = await asyncio.open_connection(*agent.status_address)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(10):
        text = (await reader.read()).decode()
    writer.close()
    assert "200 OK" in text.splitlines()[0]
    assert "aggapi_edge_health_members 1.0" in text  # edge-1, which is not there: suspected, then Unhealthy
    periods = next(
        line for line in text.splitlines() if line.startswith("aggapi_edge_health_probe_periods_total")
    )
    assert float(periods.split()[1]) >= 1  # the periods run on (a fake clock that never waits)
    assert 'aggapi_edge_health_peers{verdict="Healthy"} 0.0' in text
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert agent.health() == "the health agent is not running"


def test_members_from_the_pool_topology_are_kept_for_an_offline_restart(tmp_path: Path) -> None:
    entry = {
        "name": "edge-1",
        "addresses": [
            {"type": "Hostname", "address": "edge-1"},
            {"type": "InternalIP", "address": "10.0.0.2"},
        ],
    }
    assert node_address(entry) == "10.0.0.2"
    assert node_address({"name": "x", "addresses": [{"type": "Hostname", "address": "x.local"}]}) == "x.local"
    assert node_address({"name": "y"}) is None
    feed = MembersFeed(
        "https://kas", "edge-0", ssl.create_default_context, timeout=1, cache=tmp_path / "members"
    )
    assert feed.load() is None
    feed.pool = "hangzhou"
    feed.save({"edge-0": "10.0.0.1", "edge-1": "10.0.0.2"})
    assert feed.load() == {"edge-0": "10.0.0.1", "edge-1": "10.0.0.2"}
    assert (tmp_path / "members").read_text().startswith("# pool hangzhou")
