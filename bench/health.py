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
  4. vote write load: votes per period per node and writes/s to aggapi at the default period.

Nothing asserts on timing; the exit status is non-zero when a pool-wide partition gives an Unhealthy.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api import machine, pct

from aggapi.edge_api.health_verdict import Activity, Vote, decide
from certs.files import write_pair
from certs.pki import issue_peer, new_ca
from edge.health.agent import HealthAgent
from edge.health.config import HealthConfig
from edge.health.prober import Peer, Prober, ProbeResult

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
        voters_seen = [len(pool.live_votes(t)) for t in pool.agents]
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
        for _ in range(10):
            await pool.step()
            for t in pool.agents:
                for connected in (set(), None):
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
        print(f"total {time.perf_counter() - t0:.1f}s")
    return status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--victims", type=int, default=20)
    ap.add_argument("--baseline-victims", type=int, default=20)
    ap.add_argument("--cap-rounds", type=int, default=4, help="give up on a victim after this many rounds")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
