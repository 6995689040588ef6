"""The health agent: serves the peer endpoint, probes k pool peers per period (SWIM-style, with indirect
probes before counting a round as failed), turns rounds into verdicts with hysteresis, and votes.

Long-running tasks (all in one TaskGroup, named, cancelled and awaited on shutdown): the peer endpoint,
the probe loop, the vote sender and the certificate watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

from edge.health.config import USER_AGENT, HealthConfig, PeersFile
from edge.health.hysteresis import Hysteresis
from edge.health.members import MembersFeed
from edge.health.metrics import registry_for
from edge.health.peerserver import PeerServer
from edge.health.prober import Peer, Prober, ProbeResult
from edge.health.selection import PeerSelector
from edge.health.tls import NodeTLS
from edge.health.votes import VotePoster, VoteStore, make_vote
from edge.tunnel.config import listen_address
from edge.tunnel.creds import TLSFiles
from edge.tunnel.statusserver import StatusServer

log = logging.getLogger(__name__)

STORE_FILE = "pending-votes.json"
MEMBERS_FILE = "members"


class HealthAgent:
    def __init__(
        self,
        config: HealthConfig,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        direct_probe: Callable[[Prober, Peer], Awaitable[ProbeResult]] | None = None,
    ) -> None:
        errors = config.validate()
        if errors:
            raise ValueError("; ".join(errors))
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self._rng = rng or random.Random()
        serving = None
        if config.serving_cert_file is not None:
            key = config.serving_key_file or config.serving_cert_file
            serving = TLSFiles(config.serving_cert_file, key, config.ca_file)
        self.tls = NodeTLS(
            TLSFiles(config.cert_file, config.key_file, config.ca_file), config.vote_ca_file, serving
        )
        self.prober = Prober(
            lambda: self.tls.peer_client,
            peer_port=config.peer_port,
            kubelet_port=config.kubelet_port,
            timeout=config.probe_timeout,
        )
        self._direct_hook = direct_probe  # tests: simulate a blocked direct path
        self.selector = PeerSelector(self._rng.shuffle)
        self.hysteresis = Hysteresis(config.failure_threshold, config.success_threshold)
        store_path = config.state_dir / STORE_FILE if config.state_dir is not None else None
        self.store = VoteStore(store_path, config.max_pending_votes)
        self.poster = VotePoster(
            config.effective_vote_url, lambda: self.tls.vote_client, timeout=config.vote_timeout
        )
        self._peers_file = PeersFile(config.peers_file) if config.peers_file is not None else None
        self.feed: MembersFeed | None = None
        self._members_read_at: float | None = None
        if config.api_server:
            cache = config.state_dir / MEMBERS_FILE if config.state_dir is not None else None
            self.feed = MembersFeed(
                config.api_server,
                config.node_name,
                lambda: self.tls.vote_client,
                timeout=config.vote_timeout,
                cache=cache,
            )
        self.members: dict[str, Peer] = {}
        self.set_members(dict(config.peers))
        self.server = PeerServer(self.tls.server, self.members.get, self.direct_probe, self.health)
        self._votes_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self.periods = 0
        self.status_address: tuple[str, int] | None = None
        self.probes_sent = 0  # direct + indirect probe requests made by this agent

    # --- public -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled. Raises OSError at once if the peer (or metrics) endpoint cannot listen."""
        async with self.serving(), asyncio.TaskGroup() as tg:
            status: StatusServer | None = None
            if self.config.metrics_bind_address:
                status = StatusServer(registry_for(self), self.health)
                await status.start(*listen_address(self.config.metrics_bind_address))
                self.status_address = status.address
            self._tasks = [
                tg.create_task(self.server.serve(), name="health-agent-peer-server"),
                tg.create_task(self._probe_loop(), name="health-agent-probe"),
                tg.create_task(self._vote_loop(), name="health-agent-votes"),
                tg.create_task(self._watch_certs(), name="health-agent-cert-watch"),
            ]
            if status is not None:
                self._tasks.append(tg.create_task(status.serve(), name="health-agent-status"))
            self._running = True
            try:
                await asyncio.Event().wait()
            finally:
                self._running = False
                self._tasks = []

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Recover pending votes and serve the peer endpoint (without the loops: tests drive periods)."""
        if self.feed is not None:
            saved = await asyncio.to_thread(self.feed.load)
            if saved is not None:  # until the cluster answers (it may be unreachable)
                self.set_members(saved)
        recovered = await asyncio.to_thread(self.store.recover)
        if recovered:
            log.info("health agent: recovered %d pending votes", recovered)
            self._votes_ready.set()
        await self.server.start(self.config.address, self.config.peer_port)
        self._running = True
        try:
            yield
        finally:
            self._running = False
            await self.server.close()

    def health(self) -> str | None:
        if not self._running:
            return "the health agent is not running"
        for task in self._tasks:
            if task.done():
                return f"{task.get_name()} stopped"
        return None

    def set_members(self, peers: dict[str, str]) -> None:
        """The pool members (name → address); this node is left out."""
        self.members.clear()
        self.members.update({n: Peer(n, a) for n, a in peers.items() if n != self.config.node_name})
        self.selector.set_members(self.members)
        self.hysteresis.forget_except(set(self.members))

    async def direct_probe(self, peer: Peer) -> ProbeResult:
        self.probes_sent += 1
        if self._direct_hook is not None:
            return await self._direct_hook(self.prober, peer)
        return await self.prober.direct(peer)

    async def run_period(self) -> list[str]:
        """One probe period: probe k peers plus (up to k) unsettled ones again, update verdicts, queue
        votes. Returns the peers probed."""
        await self._refresh_members()
        k = self.config.probes_per_period
        picked = self.selector.next_period(k)
        again = [n for n in self.hysteresis.unsettled() if n in self.members and n not in picked][:k]
        targets = [self.members[n] for n in (*picked, *again)]
        results = await asyncio.gather(*(self._probe_round(p) for p in targets))
        now = self.clock()
        for peer, result in zip(targets, results, strict=True):
            verdict = self.hysteresis.record(peer.name, result.ok, result.detail, now)
            if self.hysteresis.settled(peer.name):
                self.store.put(make_vote(self.config.node_name, peer.name, verdict, result.detail, now))
                self._votes_ready.set()
        self.periods += 1
        return [p.name for p in targets]

    async def flush(self) -> bool:
        """Post the pending votes (oldest first); keep the rest on disk. True when nothing is left."""
        if not self.config.effective_vote_url:
            return True
        votes = sorted(self.store.pending.values(), key=lambda v: v.get("observedAt", ""))
        if votes:
            async with aiohttp.ClientSession(headers={"User-Agent": USER_AGENT}) as session:
                for vote in votes:
                    accepted = await self.poster.post(session, vote)
                    if accepted is None:
                        break  # the cloud is unreachable: keep this one and the rest
                    self.store.done(vote)
        await asyncio.to_thread(self.store.save)
        return not self.store.pending

    # --- internals --------------------------------------------------------------------------------

    async def _probe_round(self, peer: Peer) -> ProbeResult:
        direct = await self.direct_probe(peer)
        if direct.ok:
            return direct
        vias = [self.members[n] for n in self.selector.others(peer.name, self.config.indirect_probes)]
        if not vias:
            return direct
        self.probes_sent += len(vias)
        answers = await asyncio.gather(*(self.prober.indirect(v, peer.name) for v in vias))
        detail: dict[str, Any] = {**direct.detail, "indirect": [a.detail for a in answers]}
        return ProbeResult(any(a.ok for a in answers), detail)

    async def _refresh_members(self) -> None:
        if self.feed is not None:
            await self._read_members()
            return
        if self._peers_file is None:
            return
        try:
            peers = await asyncio.to_thread(self._peers_file.read_if_changed)
        except (OSError, ValueError) as e:
            log.warning("health agent: cannot read peers file %s: %s", self._peers_file.path, e)
            return
        if peers is not None:
            log.info("health agent: pool members now %s", sorted(peers))
            self.set_members(peers)

    async def _read_members(self) -> None:
        assert self.feed is not None
        now = self.clock()
        if self._members_read_at is not None and now - self._members_read_at < self.config.members_refresh:
            return
        self._members_read_at = now
        try:
            members = await self.feed.fetch()
        except Exception as e:  # the cloud may be unreachable: keep probing the members we know
            log.warning("health agent: cannot read the pool members from %s: %s", self.config.api_server, e)
            return
        if set(members) - {self.config.node_name} != set(self.members) or any(
            self.members[n].address != a for n, a in members.items() if n in self.members
        ):
            log.info("health agent: pool %s members now %s", self.feed.pool or "(none)", sorted(members))
            self.set_members(members)
        try:
            await asyncio.to_thread(self.feed.save, members)
        except OSError as e:
            log.warning("health agent: cannot keep the members in %s: %s", self.feed.cache, e)

    async def _probe_loop(self) -> None:
        while True:
            try:
                await self.run_period()
            except Exception:  # one bad period must not stop probing
                log.exception("health agent: probe period failed")
            await self.sleep(self.config.period)

    async def _vote_loop(self) -> None:
        while True:
            await self._votes_ready.wait()
            self._votes_ready.clear()
            try:
                if not await self.flush():
                    await self.sleep(self.config.period)  # link down: try again next period
                    self._votes_ready.set()
            except OSError as e:
                log.warning("health agent: cannot keep pending votes on disk: %s", e)

    async def _watch_certs(self) -> None:
        while True:
            await self.sleep(self.config.cert_check_interval)
            await asyncio.to_thread(self.tls.reload_if_changed)
