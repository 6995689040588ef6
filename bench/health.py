"""`make bench`: the edge health agents of one pool of 200 nodes, in process, on a simulated network.

200 real `HealthAgent`s (selection, indirect probes, hysteresis, vote queue) share a fake clock; the
network is a dict: direct probes go through the agent's `direct_probe` hook, indirect probes through a
fake `Prober.indirect`, no socket is opened. Periods are driven by hand (`run_period()` on every live
agent, then the clock moves one period). Each vote an agent queues is one write to aggapi (one etcd put
under a shared lease); aggapi's side is `decide()` over the votes still alive (written less than
ttl + reuse = 33 s ago at the default --health-vote-ttl of 30 s).

  1. a node dies: periods (and seconds at the default 10 s period) until `decide()` says Unhealthy, for
     ~20 random victims (p50/p99), also until the first Unhealthy vote and until a majority of agents
     hold an Unhealthy verdict locally; baseline: the same agents probing all-to-all (k = N-1);
  2. probe messages per period (direct + indirect) vs all-to-all N*(N-1);
  3. false Unhealthy verdicts: the whole pool cut off from the cloud (no vote arrives, no tunnel agent
     connected) over 10 periods, and the pool split into two halves that cannot reach each other;
  4. vote write load: votes per period per node and writes/s to aggapi at the default period;
  5. that write load on a real aggapi: its own etcd, a devcluster (the KAS stand-in) and `aggapi serve
     --kubeconfig` (Node informer, default --health-vote-ttl) with the N Nodes in one pool; N voters, each
     with its own node client certificate (CN=system:node:<n>, O=system:nodes) and aiohttp session, POST
     HealthVotes (the agents' body) at the rate (4) measured, spread evenly over the period (open loop),
     then as fast as 64 concurrent posters can (closed loop): votes/s, POST latency p50/p99, aggapi and
     etcd CPU (/proc/<pid>/stat utime + stime) per vote and aggapi CPU %. Baseline, same run, same etcd,
     same pacing / concurrency: raw etcd puts under a shared lease (the vote store's lease policy) via
     EtcdClient, and aggapi's own VoteStore.put in this process (range + txn + lease, no HTTP); they run
     before aggapi's phases and their leases are revoked first (aggapi reads every live vote each second).
     etcd's gRPC requests per op (its /metrics) are printed too.

Nothing asserts on timing; the exit status is non-zero when a pool-wide partition gives an Unhealthy, or
when (5) could not run or a vote or baseline write failed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import random
import resource
import ssl
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from api import Broken, machine, machine_busy, pct, proc_cpu, run_pool
from support.aggapi import AggapiServer, client_ssl
from support.devcluster import Devcluster
from support.etcd import EtcdServer, start_etcd

from aggapi.devlab import make_pki
from aggapi.edge_api.health import VoteStore
from aggapi.edge_api.health_verdict import Activity, Vote, decide
from aggapi.machinery.aio import within
from aggapi.machinery.timefmt import format_rfc3339
from aggapi.storage.errors import StorageError
from aggapi.storage.etcd import EtcdClient, EtcdConfig, prefix_end
from aggapi.storage.etcd_types import Compare, OpPut, RangeResult, TxnResult
from certs.files import load_or_create_ca, write_pair
from certs.pki import issue_client, issue_peer, new_ca
from edge.health.agent import HealthAgent
from edge.health.config import HealthConfig
from edge.health.prober import Peer, Prober, ProbeResult
from edge.health.votes import make_vote
from edge.kubelet_sim import NodeIdentity, node_object

POOL = "bench-pool"
VOTE_TTL = 30.0  # aggapi's default --health-vote-ttl
VOTE_LIFE = VOTE_TTL + VOTE_TTL // 10  # a vote lives between ttl and ttl + reuse after its write
ALIVE_WINDOW = VOTE_TTL * 2 / 3  # aggapi: a node that posted a vote this recently is alive


class Net:
    """Who can reach whom: dead nodes reach nobody; nodes in different groups cannot reach each other."""

    def __init__(self) -> None:
        self.dead: set[str] = set()
        self.group: dict[str, int] = {}
        self.relayed = 0  # direct probes made by a relay on behalf of an indirect probe

    def ok(self, a: str, b: str) -> bool:
        return a not in self.dead and b not in self.dead and self.group.get(a, 0) == self.group.get(b, 0)


class FakeProber(Prober):
    def __init__(self, net: Net, me: str) -> None:
        super().__init__(lambda: None, peer_port=1, kubelet_port=2, timeout=2.0)  # type: ignore[arg-type,return-value]
        self.net = net
        self.me = me

    async def direct(self, peer: Peer) -> ProbeResult:
        ok = self.net.ok(self.me, peer.name)
        return ProbeResult(ok, {"kubelet": "ok" if ok else "timeout", "agent": "ok" if ok else "timeout"})

    async def indirect(self, via: Peer, target: str) -> ProbeResult:
        if not self.net.ok(self.me, via.name):
            return ProbeResult(False, {"via": via.name, "error": "timeout"})
        self.net.relayed += 1
        return ProbeResult(self.net.ok(via.name, target), {"via": via.name})


@dataclass
class Pool:
    agents: dict[str, HealthAgent]
    net: Net
    now: list[float]
    period: float
    # target -> voter -> (result, observedAt, when aggapi received it)
    votes: dict[str, dict[str, tuple[str, str, float]]] = field(default_factory=dict)
    writes: list[int] = field(default_factory=list)  # votes queued, per period
    probes: list[int] = field(default_factory=list)  # direct + indirect probe requests, per period
    cloud_up: bool = True

    async def step(self) -> None:
        live = [a for n, a in self.agents.items() if n not in self.net.dead]
        sent0 = sum(a.probes_sent for a in live)
        await asyncio.gather(*(a.run_period() for a in live))
        self.probes.append(sum(a.probes_sent for a in live) - sent0)
        written = 0
        for a in live:
            pending = a.store.pending
            if self.cloud_up:  # the vote loop posts every pending vote: one etcd put each
                for vote in pending.values():
                    by = self.votes.setdefault(vote["target"], {})
                    by[vote["voter"]] = (vote["result"], vote["observedAt"], self.now[0])
                written += len(pending)
                pending.clear()
        self.writes.append(written)
        self.now[0] += self.period
        self._posts = None

    _posts: dict[str, float] | None = None

    def live_votes(self, target: str) -> list[Vote]:
        t = self.now[0] - self.period  # the votes of the period that just ran count
        out = []
        for voter, (result, observed, at) in self.votes.get(target, {}).items():
            if t - at <= VOTE_LIFE:
                out.append(Vote(voter, target, observed, result))
        return out

    def posts(self) -> dict[str, float]:
        """Voter → when aggapi last received a live vote from it (what the health service derives)."""
        if self._posts is None:
            t = self.now[0] - self.period
            self._posts = {}
            for by in self.votes.values():
                for voter, (_, _, at) in by.items():
                    if t - at <= VOTE_LIFE:
                        self._posts[voter] = max(at, self._posts.get(voter, at))
        return self._posts

    def verdict(self, target: str, connected: set[str] | None = None) -> str:
        posts = self.posts()
        voting = self.now[0] - self.period - posts.get(target, float("-inf")) <= ALIVE_WINDOW
        activity = Activity(frozenset(posts), voting)
        return decide(target, POOL, self.agents, self.live_votes(target), connected, activity).verdict

    def local_unhealthy(self, target: str) -> int:
        return sum(
            1
            for n, a in self.agents.items()
            if n not in self.net.dead and a.hysteresis.verdict(target) == "Unhealthy"
        )


def make_pool(n: int, tmp: Path, *, k: int, seed: int, **kw: Any) -> Pool:
    ca = new_ca("bench-health-ca")
    pair = issue_peer(ca, common_name="system:node:bench", organizations=["system:nodes"], ips=["10.0.0.1"])
    write_pair(pair, tmp / "node.crt", tmp / "node.key")
    (tmp / "ca.crt").write_bytes(ca.cert_pem())
    names = [f"edge-{i:03d}" for i in range(n)]
    peers = tuple((name, f"10.0.{i // 250}.{i % 250 + 1}") for i, name in enumerate(names))
    base = HealthConfig(
        node_name="",
        address="",
        cert_file=tmp / "node.crt",
        key_file=tmp / "node.key",
        ca_file=tmp / "ca.crt",
        peers=peers,
        probes_per_period=k,
        **kw,
    )
    net = Net()
    now = [1_700_000_000.0]
    rng = random.Random(seed)
    agents: dict[str, HealthAgent] = {}
    for name, addr in peers:
        cfg = replace(base, node_name=name, address=addr)
        agent = HealthAgent(cfg, clock=lambda: now[0], rng=random.Random(rng.random()))
        agent.prober = FakeProber(net, name)
        agents[name] = agent
    return Pool(agents, net, now, base.period)


async def warm_up(pool: Pool) -> int:
    """Run periods until every agent has a Healthy verdict about every peer."""
    periods = 0
    while True:
        await pool.step()
        periods += 1
        if (
            all(a.hysteresis.verdict(p) == "Healthy" for a in pool.agents.values() for p in a.members)
            or periods > 1000
        ):
            return periods


@dataclass
class Detection:
    first_vote: float  # periods until the first Unhealthy vote reached aggapi
    local_majority: float  # periods until a majority of the peers hold Unhealthy locally
    verdict: float  # periods until decide() says Unhealthy (inf: not within the cap)
    max_voters: int  # the most live votes about the victim seen at once


async def detect(pool: Pool, victims: list[str], cap: int) -> list[Detection]:
    """Kill `victims` at once (independent failures) and follow each until decide() says Unhealthy."""
    pool.net.dead.update(victims)
    needed = (len(pool.agents) - 1) // 2 + 1
    inf = float("inf")
    dets = {v: Detection(inf, inf, inf, 0) for v in victims}
    for p in range(1, cap + 1):
        await pool.step()
        for v, d in dets.items():
            votes = pool.live_votes(v)
            d.max_voters = max(d.max_voters, len(votes))
            if d.first_vote == inf and any(x.result == "Unhealthy" for x in votes):
                d.first_vote = p
            if d.local_majority == inf and pool.local_unhealthy(v) >= needed:
                d.local_majority = p
            if d.verdict == inf and pool.verdict(v) == "Unhealthy":
                d.verdict = p
        if all(d.verdict != inf for d in dets.values()):
            break
    pool.net.dead.difference_update(victims)
    return list(dets.values())


def periods_s(p: float, period: float) -> str:
    if p == float("inf"):
        return "never"
    return f"{p:.0f} periods = {p * period:.0f} s"


# ---- (5) the vote write load on a real aggapi ------------------------------------------------------------

EN = "/apis/edge.aggapi.io/v1alpha1/edgenodes"
POOL_LABEL = "apps.openyurt.io/nodepool"
JSON_CT = {"Content-Type": "application/json"}
PROBES = {"kubelet": "ok", "agent": "ok"}  # what an agent's vote carries about a live peer
HTTP_SECONDS = 10.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=HTTP_SECONDS)
ETCD_TIMEOUT = 10.0
SETUP_TIMEOUT = 180.0
RAW_PREFIX = "/bench-raw"  # the baselines' own keys, apart from aggapi's prefix

Op = Callable[[int], Coroutine[Any, Any, None]]
Drive = Callable[[Op], Awaitable[None]]


def cpu_now(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (utime + stime) of each process, and of this one (the load generator) as "bench"."""
    out = {who: proc_cpu(pid) for who, pid in pids.items()}
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["bench"] = ru.ru_utime + ru.ru_stime
    out["machine"] = machine_busy()  # all cores, every process
    return out


@dataclass
class Load:
    """One load phase: what succeeded, how long it took, each op's latency, the errors, the CPU used."""

    ok: int
    elapsed: float
    latencies: list[float]
    errors: Counter[str]
    cpu: dict[str, float]  # CPU seconds used during the phase, by process
    calls: dict[str, float]  # etcd gRPC requests during the phase, by method

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else float("nan")

    def ms(self, q: float) -> float:
        return pct(self.latencies, q) * 1e3

    def cpu_ms(self, who: str) -> float:
        """CPU ms of `who` per successful op."""
        return self.cpu.get(who, 0.0) * 1e3 / self.ok if self.ok else float("nan")

    def cpu_pct(self, who: str) -> float:
        """CPU % of one core."""
        return 100 * self.cpu.get(who, 0.0) / self.elapsed if self.elapsed > 0 else float("nan")

    def line(self, what: str, *cpu: str) -> str:
        used = ", ".join(f"{who} {self.cpu_ms(who):.2f} ms/op ({self.cpu_pct(who):.0f}%)" for who in cpu)
        err = (
            f"; ERRORS {sum(self.errors.values())}: {dict(self.errors.most_common(3))}" if self.errors else ""
        )
        others = self.cpu["machine"] - sum(v for k, v in self.cpu.items() if k != "machine")
        per = ", ".join(
            f"{k} {v / max(1, self.ok):.2f}" for k, v in sorted(self.calls.items()) if k != "Watch"
        )
        return (
            f"{what}: {self.ok} in {self.elapsed:.1f}s = {self.rate:,.1f}/s, latency p50 "
            f"{self.ms(0.5):.2f} ms p99 {self.ms(0.99):.2f} ms; CPU {used}; everything else on the "
            f"machine {100 * max(0.0, others) / self.elapsed:.0f}%; etcd requests per op: {per}{err}"
        )


async def etcd_calls(client_url: str) -> dict[str, float]:
    """etcd's gRPC requests handled so far by method (Range, Txn, Put, LeaseGrant, ...), from its /metrics."""
    out: dict[str, float] = {}
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s, s.get(client_url + "/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith("grpc_server_handled_total{") and 'grpc_method="' in line:
            method = line.split('grpc_method="', 1)[1].split('"', 1)[0]
            out[method] = out.get(method, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def measure(drive: Drive, op: Op, pids: dict[str, int], etcd_url: str) -> Load:
    """Run `drive` over `op`, timing each op; a failed op is counted by kind, not timed."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()

    async def timed(j: int) -> None:
        t0 = time.perf_counter()
        try:
            await op(j)
        except (Broken, StorageError, aiohttp.ClientError, OSError, TimeoutError, RuntimeError) as exc:
            errors[f"{type(exc).__name__}: {str(exc)[:160]}"] += 1
        else:
            latencies.append(time.perf_counter() - t0)

    calls0 = await etcd_calls(etcd_url)
    cpu0 = cpu_now(pids)
    t0 = time.perf_counter()
    await drive(timed)
    elapsed = time.perf_counter() - t0
    cpu1 = cpu_now(pids)
    calls1 = await etcd_calls(etcd_url)
    calls = {k: v - calls0.get(k, 0.0) for k, v in calls1.items() if v - calls0.get(k, 0.0) > 0}
    return Load(len(latencies), elapsed, latencies, errors, {k: cpu1[k] - cpu0[k] for k in cpu1}, calls)


def paced(rate: float, seconds: float) -> Drive:
    """Open loop: op j starts at j / rate seconds, whether or not the earlier ones have answered."""

    async def drive(op: Op) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks: list[asyncio.Task[None]] = []
        for j in range(round(rate * seconds)):
            delay = start + j / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(op(j)))
        async with asyncio.timeout(HTTP_SECONDS + 5):  # every op has its own, shorter timeout
            await asyncio.gather(*tasks)

    return drive


def closed(concurrency: int, seconds: float) -> Drive:
    """Closed loop: `concurrency` workers, each starting its next op as soon as its last one answered."""

    async def drive(op: Op) -> None:
        counter = itertools.count()
        end = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < end:  # bounded by the deadline
                await op(next(counter))

        async with asyncio.timeout(seconds + HTTP_SECONDS + 5):
            await asyncio.gather(*(worker() for _ in range(concurrency)))

    return drive


def idle(seconds: float) -> Drive:
    async def drive(_: Op) -> None:
        await asyncio.sleep(seconds)

    return drive


class SharedLease:
    """The vote store's lease policy, for the raw baseline: one lease of ttl + reuse per `reuse` seconds."""

    def __init__(self, etcd: EtcdClient, ttl: int, granted: list[int]) -> None:
        self.etcd, self.ttl, self.reuse, self.granted = etcd, ttl, ttl // 10, granted
        self._lease: tuple[int, float] | None = None
        self._lock = asyncio.Lock()

    async def id(self) -> int:
        async with self._lock:
            now = time.monotonic()
            if self._lease is None or now - self._lease[1] >= self.reuse:
                lease = await within(self.etcd.lease_grant(self.ttl + self.reuse), ETCD_TIMEOUT)
                self.granted.append(lease)
                self._lease = (lease, now)
            return self._lease[0]


class Recording:
    """The EtcdClient as VoteStore sees it, remembering the leases it grants."""

    def __init__(self, etcd: EtcdClient, granted: list[int]) -> None:
        self.etcd, self.granted = etcd, granted

    async def range(self, key: bytes, range_end: bytes | None = None) -> RangeResult:
        return await self.etcd.range(key, range_end)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        return await self.etcd.put(key, value, lease=lease)

    async def lease_grant(self, ttl: int) -> int:
        lease = await self.etcd.lease_grant(ttl)
        self.granted.append(lease)
        return lease

    async def txn(self, compares: list[Compare], success: list[OpPut]) -> TxnResult:
        return await self.etcd.txn(compares, success)


def vote_range(prefix: str) -> tuple[bytes, bytes]:
    """aggapi's vote keys (aggapi.edge_api.health.VoteStore.dir) as an etcd range."""
    start = f"{prefix.rstrip('/')}/aggapi.internal/health-votes/".encode()
    return start, prefix_end(start)


def pair(j: int, n: int) -> tuple[int, int]:
    """Vote j: voter j mod n about the peer (j // n) mod (n - 1) + 1 places on. Every block of n votes has
    each node voting once and voted about once (a period at k=3 is 3 blocks), and a (voter, target) pair
    comes back only after n (n - 1) votes, so no two concurrent votes race on one key."""
    voter = j % n
    return voter, (voter + 1 + (j // n) % (n - 1)) % n


@dataclass
class Real:
    """The processes of section (5): etcd, the devcluster, `aggapi serve`."""

    tmp: Path
    names: list[str]
    etcd: EtcdServer | None = None
    dc: Devcluster | None = None
    server: AggapiServer | None = None
    pids: dict[str, int] = field(default_factory=dict)

    def start(self) -> None:
        """(blocking) etcd, the devcluster and `aggapi serve --kubeconfig` (Node informer, default TTL)."""
        pki = make_pki(self.tmp / "pki")
        # etcd's default --snapshot-count (the tests' 10,000 would snapshot inside some phase, not others)
        self.etcd = start_etcd(self.tmp / "etcd", extra_args=("--snapshot-count=100000",))
        self.dc = Devcluster(self.tmp / "devcluster", self.etcd.client_url)
        self.dc.start()
        kubeconfig = self.dc.kubeconfig(self.tmp / "devcluster.kubeconfig")
        self.server = AggapiServer(
            pki,
            self.etcd.client_url,
            self.tmp / "aggapi",
            extra_args=(
                f"--kubeconfig={kubeconfig}",
                "--tunnel-port=0",
                f"--leader-elect-resource-name=bench-health-{random.randrange(16**6):06x}",
            ),
        )
        self.server.start()
        assert self.etcd.proc is not None and self.server.proc is not None
        self.pids = {"aggapi": self.server.proc.pid, "etcd": self.etcd.proc.pid}

    def stop(self) -> None:
        for part in (self.server, self.dc, self.etcd):
            if part is not None:
                part.stop()

    def node_contexts(self) -> list[ssl.SSLContext]:
        """(blocking) Each voter's TLS context with its own node client certificate (CN=system:node:<n>,
        O=system:nodes) from the CA aggapi trusts for client certificates."""
        assert self.server is not None
        pki = self.server.pki
        ca = load_or_create_ca(pki.ca.parent, "ca", common_name="aggapi-dev-ca")
        out = []
        (self.tmp / "nodes").mkdir(exist_ok=True)
        for name in self.names:
            issued = issue_client(ca, common_name=f"system:node:{name}", organizations=["system:nodes"])
            cert, key = self.tmp / "nodes" / f"{name}.crt", self.tmp / "nodes" / f"{name}.key"
            write_pair(issued, cert, key)
            ctx = ssl.create_default_context(cafile=str(pki.ca))
            ctx.load_cert_chain(str(cert), str(key))
            out.append(ctx)
        return out

    def admin(self) -> aiohttp.ClientSession:
        assert self.server is not None
        conn = aiohttp.TCPConnector(ssl=client_ssl(self.server.pki))
        return aiohttp.ClientSession(connector=conn, timeout=HTTP_TIMEOUT)

    async def make_nodes(self) -> None:
        """The Nodes, all in one pool, through the devcluster; then wait until aggapi's informer has them."""
        assert self.dc is not None and self.server is not None
        dpki = self.dc.pki
        dc_ssl = ssl.create_default_context(cafile=str(dpki.ca))
        dc_ssl.load_cert_chain(str(dpki.admin_cert), str(dpki.admin_key))
        url = self.dc.url + "/api/v1/nodes"
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=dc_ssl, limit=16), timeout=HTTP_TIMEOUT
        ) as s:

            async def create(i: int) -> None:
                ident = NodeIdentity(self.names[i], f"10.0.{i // 250}.{i % 250 + 1}")
                async with s.post(url, json=node_object(ident, labels={POOL_LABEL: POOL})) as r:
                    data = await r.read()
                    if r.status != 201:
                        raise Broken(f"create Node {self.names[i]}: HTTP {r.status} {data[:200]!r}")

            await run_pool(len(self.names), 16, create, 60)
        want = set(self.names)
        deadline = time.monotonic() + 60
        seen = 0
        async with self.admin() as s:
            while seen != len(want):  # bounded by the deadline
                if time.monotonic() > deadline:
                    raise Broken(f"aggapi lists {seen} of {len(want)} edge nodes after 60s")
                await asyncio.sleep(0.2)
                async with s.get(self.server.url + EN) as r:
                    body = await r.json() if r.status == 200 else {}
                seen = sum(1 for it in body.get("items", []) if it["metadata"]["name"] in want)

    async def health(self, node: str) -> str:
        assert self.server is not None
        async with self.admin() as s, s.get(f"{self.server.url}{EN}/{node}/health") as r:
            body = await r.json()
            if r.status != 200:
                raise Broken(f"GET {node}/health: HTTP {r.status} {body}")
        return f"{body.get('verdict')} with {len(body.get('votes') or [])} live votes ({body.get('reason')})"


async def real_load(args: argparse.Namespace, votes_per_period: float, period: float) -> bool:
    """Section (5). False when something broke."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-health-real-") as d:
        real = Real(Path(d), [f"edge-{i:03d}" for i in range(args.nodes)])
        try:
            async with asyncio.timeout(SETUP_TIMEOUT):
                await asyncio.to_thread(real.start)
                await real.make_nodes()
                contexts = await asyncio.to_thread(real.node_contexts)
            print(
                f"(5) real aggapi: {args.nodes} Nodes in pool {POOL} (devcluster), {args.nodes} voters each "
                f"with its own node certificate and aiohttp session; --health-vote-ttl default "
                f"({VOTE_TTL:.0f}s, a lease reused {VOTE_TTL // 10:.0f}s); "
                f"setup {time.perf_counter() - t0:.1f}s"
            )
            return await drive_votes(args, real, contexts, votes_per_period, period)
        except (Broken, StorageError, RuntimeError, OSError, TimeoutError, aiohttp.ClientError) as exc:
            print(f"(5) BROKEN: {type(exc).__name__}: {exc}")
            if real.server is not None and real.server.log_file.exists():
                tail = real.server.log_file.read_text(errors="replace").splitlines()[-20:]
                print("    aggapi log tail:\n      " + "\n      ".join(tail))
            return False
        finally:
            await asyncio.to_thread(real.stop)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


async def drive_votes(
    args: argparse.Namespace,
    real: Real,
    contexts: list[ssl.SSLContext],
    votes_per_period: float,
    period: float,
) -> bool:
    assert real.server is not None and real.etcd is not None
    names, pids, n, etcd_url = real.names, real.pids, len(real.names), real.etcd.client_url
    base = real.server.url + EN
    rate = votes_per_period / period
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=4), timeout=HTTP_TIMEOUT)
        for ctx in contexts
    ]
    etcd = EtcdClient(EtcdConfig((real.etcd.client_url,)))
    granted: list[int] = []  # the baselines' leases: revoked before aggapi is measured
    lease = SharedLease(etcd, int(VOTE_TTL), granted)
    store = VoteStore(Recording(etcd, granted), f"{RAW_PREFIX}/store", VOTE_TTL)
    # each kind of write walks the same (voter, target) sequence from its own start: new keys, as agents make
    seq = {"agg": itertools.count(), "put": itertools.count(), "store": itertools.count()}

    def observed_now() -> str:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as edge.health.votes.make_vote

    async def post_vote(_: int) -> None:
        v, t = pair(next(seq["agg"]), n)
        body = json.dumps(make_vote(names[v], names[t], "Healthy", PROBES, time.time())).encode()
        async with sessions[v].post(f"{base}/{names[t]}/health", data=body, headers=JSON_CT) as r:
            data = await r.read()
            if r.status != 201:
                raise Broken(f"vote {names[v]} -> {names[t]}: HTTP {r.status} {data[:160]!r}")

    async def raw_put(_: int) -> None:
        v, t = pair(next(seq["put"]), n)
        now = datetime.now(UTC)
        vote = Vote(names[v], names[t], observed_now(), "Healthy", PROBES, format_rfc3339(now))
        key = f"{RAW_PREFIX}/put/{names[t]}/{names[v]}".encode()
        await within(etcd.put(key, orjson.dumps(vote.to_json()), lease=await lease.id()), ETCD_TIMEOUT)

    async def store_put(_: int) -> None:
        v, t = pair(next(seq["store"]), n)
        now = datetime.now(UTC)
        vote = Vote(names[v], names[t], observed_now(), "Healthy", PROBES, format_rfc3339(now))
        await within(store.put(vote), ETCD_TIMEOUT)

    loads: list[Load] = []

    async def phase(drive: Drive, op: Op) -> Load:
        load = await measure(drive, op, pids, etcd_url)
        loads.append(load)
        return load

    try:
        # every voter votes once (opens its connection: no TLS handshake in any figure); the etcd channel
        t0 = time.perf_counter()
        warm = await run_pool(n, 32, post_vote, 60)
        await within(etcd.current_revision(), ETCD_TIMEOUT)
        await raw_put(0)
        await store_put(0)
        print(f"    warm-up: one vote per voter, {warm.done} votes in {time.perf_counter() - t0:.1f}s")
        rest = await phase(idle(3.0), post_vote)
        print(
            f"    idle 3s ({n} live votes; the verdicts are recomputed every 1s): aggapi CPU "
            f"{rest.cpu_pct('aggapi'):.1f}%, etcd {rest.cpu_pct('etcd'):.1f}%, the whole machine "
            f"{rest.cpu_pct('machine'):.0f}% (of one core)"
        )
        # baselines first: aggapi's recomputation reads every live vote, and those live 33 s
        secs, burst, c = args.real_seconds, args.burst_seconds, args.burst_concurrency
        put_r = await phase(paced(rate, secs / 2), raw_put)
        store_r = await phase(paced(rate, secs / 2), store_put)
        put_b = await phase(closed(c, burst / 2), raw_put)
        store_b = await phase(closed(c, burst / 2), store_put)
        # their keys would otherwise expire (a delete each) while aggapi is measured
        t1 = time.perf_counter()
        for lease_id in granted:
            await within(etcd.lease_revoke(lease_id), ETCD_TIMEOUT)
        revoked = f"{len(granted)} leases ({time.perf_counter() - t1:.1f}s)"
        settle = await phase(idle(3.0), post_vote)  # etcd deletes the baselines' keys
        agg_r = await phase(paced(rate, secs), post_vote)
        verdict = await real.health(names[0])
        live = len((await within(etcd.range(*vote_range(real.server.prefix)), ETCD_TIMEOUT)).kvs)
        after = await phase(idle(3.0), post_vote)  # what the live votes cost with no vote coming in
        agg_b = await phase(closed(c, burst), post_vote)

        print(
            f"    default rate: {votes_per_period:.0f} votes/period from (4) spread over {period:.0f}s = "
            f"{rate:.1f} votes/s, open loop"
        )
        print("      " + agg_r.line(f"aggapi POST {secs:.0f}s", "aggapi", "etcd", "bench"))
        print("      " + put_r.line(f"raw etcd put+lease {secs / 2:.0f}s", "etcd", "bench"))
        print("      " + store_r.line(f"VoteStore.put in process {secs / 2:.0f}s", "etcd", "bench"))
        print(
            f"      aggapi/raw put: votes/s {ratio(agg_r.rate, put_r.rate)}, latency p50 "
            f"{ratio(agg_r.ms(0.5), put_r.ms(0.5))} p99 {ratio(agg_r.ms(0.99), put_r.ms(0.99))}, etcd CPU "
            f"per write {ratio(agg_r.cpu_ms('etcd'), put_r.cpu_ms('etcd'))}; aggapi/VoteStore.put: latency "
            f"p50 {ratio(agg_r.ms(0.5), store_r.ms(0.5))}, etcd CPU per write "
            f"{ratio(agg_r.cpu_ms('etcd'), store_r.cpu_ms('etcd'))}"
        )

        def net(load: Load, who: str) -> float:
            """CPU ms per op above what the process used idle (leader election, informers, the verdicts)."""
            return (load.cpu[who] - rest.cpu[who] / rest.elapsed * load.elapsed) * 1e3 / max(1, load.ok)

        agg_net, etcd_net, put_net = net(agg_r, "aggapi"), net(agg_r, "etcd"), net(put_r, "etcd")
        print(
            f"      net of the idle CPU: aggapi {agg_net:.2f} ms/vote, etcd {etcd_net:.2f} ms/vote vs "
            f"{put_net:.2f} ms/raw put ({ratio(etcd_net, put_net)}) and {net(store_r, 'etcd'):.2f} "
            "ms/VoteStore.put"
        )
        print(
            f"      {names[0]} after it: {verdict}; then idle 3s with {live} live votes: aggapi CPU "
            f"{after.cpu_pct('aggapi'):.1f}%, etcd {after.cpu_pct('etcd'):.1f}% (the verdicts, recomputed "
            f"every 1s, read every live vote); idle 3s before it, once the baselines' {revoked} were "
            f"revoked: aggapi {settle.cpu_pct('aggapi'):.1f}%, etcd {settle.cpu_pct('etcd'):.1f}%"
        )
        print(f"    burst: {c} concurrent posters, closed loop")
        print("      " + agg_b.line(f"aggapi POST {burst:.0f}s", "aggapi", "etcd", "bench"))
        print("      " + put_b.line(f"raw etcd put+lease {burst / 2:.0f}s", "etcd", "bench"))
        print("      " + store_b.line(f"VoteStore.put in process {burst / 2:.0f}s", "etcd", "bench"))
        print(
            f"      aggapi/raw put: votes/s {ratio(agg_b.rate, put_b.rate)}, latency p50 "
            f"{ratio(agg_b.ms(0.5), put_b.ms(0.5))} p99 {ratio(agg_b.ms(0.99), put_b.ms(0.99))}, etcd CPU "
            f"per write {ratio(agg_b.cpu_ms('etcd'), put_b.cpu_ms('etcd'))}; aggapi/VoteStore.put: votes/s "
            f"{ratio(agg_b.rate, store_b.rate)}; the default rate is {100 * rate / agg_b.rate:.0f}% of the "
            "burst rate"
        )
        return not any(load.errors for load in loads)
    finally:
        async with asyncio.timeout(30):
            await asyncio.gather(*(s.close() for s in sessions))
            await etcd.close()


async def bench(args: argparse.Namespace) -> int:
    info = machine()
    print(f"# bench/health.py  {info['date']}  {info['cpu']} x{info['nproc']}  python {info['python']}")
    n = args.nodes
    all_to_all = n * (n - 1)
    status = 0
    with tempfile.TemporaryDirectory(prefix="bench-health-") as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        pool = make_pool(n, tmp, k=3, seed=args.seed)
        cfg = next(iter(pool.agents.values())).config
        warm = await warm_up(pool)
        rounds = -(-(n - 1) // cfg.probes_per_period)
        print(
            f"pool of {n}: k={cfg.probes_per_period} indirect={cfg.indirect_probes} "
            f"failure_threshold={cfg.failure_threshold} period={cfg.period:.0f}s vote life {VOTE_LIFE:.0f}s; "
            f"a round is {rounds} periods; warm-up (all Healthy) {warm} periods "
            f"({time.perf_counter() - t0:.1f}s)"
        )

        # (2) + (4) steady state
        steady = 10
        pool.probes.clear()
        pool.writes.clear()
        relayed0 = pool.net.relayed
        for _ in range(steady):
            await pool.step()
        probes = sum(pool.probes) / steady
        writes = sum(pool.writes) / steady
        print(
            f"(2) probe messages/period: {probes:.0f} (direct + indirect requests) vs all-to-all "
            f"{all_to_all}  ratio {probes / all_to_all:.4f} (1/{all_to_all / probes:.0f}); "
            f"relayed {(pool.net.relayed - relayed0) / steady:.0f}/period"
        )
        voters_seen: list[float] = [len(pool.live_votes(t)) for t in pool.agents]
        print(
            f"(4) votes: {writes / n:.2f}/period per node, {writes:.0f}/period = "
            f"{writes / cfg.period:.0f} writes/s to aggapi at {cfg.period:.0f}s; live votes per target "
            f"p50 {pct(voters_seen, 0.5):.0f} min {min(voters_seen)} max {max(voters_seen)} (a verdict needs "
            f"3 observers, --health-min-voters; all-to-all would be {n - 1})"
        )

        # (1) detection
        rng = random.Random(args.seed)
        victims = rng.sample(sorted(pool.agents), args.victims)
        cap = args.cap_rounds * rounds
        t1 = time.perf_counter()
        dets = await detect(pool, victims, cap)
        for _ in range(cfg.success_threshold * rounds):  # heal: everyone Healthy about them again
            await pool.step()
        took = time.perf_counter() - t1

        def summary(vals: list[float]) -> str:
            return (
                f"p50 {periods_s(pct(vals, 0.5), cfg.period)}, p99 {periods_s(pct(vals, 0.99), cfg.period)}"
            )

        print(f"(1) {len(victims)} victims killed at once, cap {cap} periods ({took:.1f}s):")
        print(f"    first Unhealthy vote:              {summary([d.first_vote for d in dets])}")
        print(f"    majority of agents Unhealthy locally: {summary([d.local_majority for d in dets])}")
        print(f"    decide() Unhealthy:                {summary([d.verdict for d in dets])}")
        print(f"    most live votes about a victim: {max(d.max_voters for d in dets)}")

        # baseline: all-to-all with the same thresholds
        t2 = time.perf_counter()
        base = make_pool(n, tmp, k=n - 1, seed=args.seed)
        await warm_up(base)
        base_dets = await detect(base, victims[: args.baseline_victims], 10)
        for _ in range(cfg.success_threshold):
            await base.step()
        bv = [d.verdict for d in base_dets]
        b50 = pct(bv, 0.5)
        d50 = pct([d.verdict for d in dets], 0.5)
        print(
            f"    baseline all-to-all ({len(base_dets)} victims, {time.perf_counter() - t2:.1f}s): decide() "
            f"Unhealthy p50 {periods_s(b50, cfg.period)}, p99 {periods_s(pct(bv, 0.99), cfg.period)}; "
            f"ratio {'never (inf)' if d50 == float('inf') else f'{d50 / b50:.1f}x'}; its probes/period "
            f"{sum(base.probes[:3]) / 3:.0f}"
        )

        # (3) partitions
        pool.cloud_up = False
        false_cut = 0
        checked = 0
        cut_views: tuple[set[str] | None, ...] = (set(), None)
        for _ in range(10):
            await pool.step()
            for t in pool.agents:
                for connected in cut_views:
                    checked += 1
                    if pool.verdict(t, connected) == "Unhealthy":
                        false_cut += 1
        print(
            f"(3) pool cut off from the cloud, 10 periods: {false_cut} Unhealthy of {checked} verdicts "
            "(tunnel showing no agent, and no tunnel)"
        )
        if false_cut:
            status = 1
        pool.cloud_up = True
        for _ in range(cfg.success_threshold * rounds):
            await pool.step()

        for label, p, periods, part in (
            ("k=3", pool, 20, n // 2),
            ("k=3", pool, 20, n // 4),
            ("all-to-all", base, 2 * cfg.failure_threshold + 2, n // 2),
        ):
            names = sorted(p.agents)
            for i, name in enumerate(names):
                p.net.group[name] = 0 if i < part else 1
            false_split = 0
            worst = 0
            for _ in range(periods):
                await p.step()
                bad = sum(1 for t in names if p.verdict(t) == "Unhealthy")
                worst = max(worst, bad)
                false_split += bad
            p.net.group.clear()
            for _ in range(cfg.success_threshold + 1):
                await p.step()
            print(
                f"    pool split {part}/{n - part}, both halves reach the cloud, {label}, {periods} periods: "
                f"at most {worst} of {n} nodes Unhealthy at once ({false_split} Unhealthy verdicts in all)"
            )
        if not args.no_real:
            t5 = time.perf_counter()
            if not await real_load(args, writes, cfg.period):
                status = 1
            print(f"    (5) took {time.perf_counter() - t5:.1f}s")
        print(f"total {time.perf_counter() - t0:.1f}s")
    return status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--victims", type=int, default=20)
    ap.add_argument("--baseline-victims", type=int, default=20)
    ap.add_argument("--cap-rounds", type=int, default=4, help="give up on a victim after this many rounds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--real-seconds", type=float, default=20, help="(5): votes at the default rate (s)")
    ap.add_argument("--burst-seconds", type=float, default=10, help="(5): votes as fast as possible (s)")
    ap.add_argument("--burst-concurrency", type=int, default=64, help="(5): concurrent posters in the burst")
    ap.add_argument("--no-real", action="store_true", help="skip (5), the real aggapi and etcd")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
