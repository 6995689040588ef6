"""The tunnel agent: keeps a session with every tunnel server and carries their dials to local targets.

HA: each Welcome lists the server's peer replicas; the agent connects to all of them (and to every
--server), so whichever replica a request lands on has this node's agent. A replica reached through two
endpoints (a Service name and its pod address) is detected by server_id and used once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edge.tunnel.config import AgentConfig, listen_address
from edge.tunnel.creds import TLSFiles
from edge.tunnel.link import Link
from edge.tunnel.metrics import AgentMetrics, registry_for
from edge.tunnel.protocol import format_hostport, pb, split_hostport
from edge.tunnel.statusserver import StatusServer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LinkStatus:
    endpoint: str
    connected: bool
    server_id: str
    last_error: str


class TunnelAgent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        metrics: AgentMetrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        errors = config.validate()
        if errors:
            raise ValueError("; ".join(errors))
        self.config = config
        self.metrics = metrics or AgentMetrics()
        self.sleep = sleep
        self.random = rng
        self._links: dict[str, tuple[Link, asyncio.Task[None]]] = {}
        self._peers: dict[str, set[str]] = {}  # endpoint → peers its server last announced
        self._static = {_norm(s) for s in config.servers}
        self._tg: asyncio.TaskGroup | None = None
        self._cert_watch: asyncio.Task[None] | None = None
        self._active_connections = 0
        self.registry = registry_for(self.metrics, lambda: [(s.endpoint, s.connected) for s in self.links()])
        self.status_address: tuple[str, int] | None = None  # where /metrics and /healthz are served

    # --- public -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled; every link, connection, watcher and the status server end with it.
        Raises OSError at once if --metrics-bind-address cannot be listened on."""
        status: StatusServer | None = None
        if self.config.metrics_bind_address:
            status = StatusServer(self.registry, self.health, timeout=self.config.write_timeout)
            await status.start(*listen_address(self.config.metrics_bind_address))
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                try:
                    if status is not None:
                        self.status_address = status.address
                        tg.create_task(status.serve(), name="tunnel-agent-status")
                    self._reconcile()
                    self._cert_watch = tg.create_task(self._watch_certs(), name="tunnel-agent-cert-watch")
                    await asyncio.Event().wait()
                finally:
                    self._tg = None
        finally:
            self._cert_watch = None
            self.status_address = None
            if status is not None:
                await status.close()  # already closed unless its task never ran

    def health(self) -> str | None:
        """None while the agent's loops run (each link is connected, connecting or backing off), else
        what stopped. Served as /healthz."""
        if self._tg is None:
            return "the tunnel agent is not running"
        loops = [("certificate watcher", self._cert_watch)] + [
            (f"link to {ep}", task) for ep, (_, task) in self._links.items()
        ]
        for what, task in loops:
            if task is None or task.done():
                return f"the {what} stopped"
        return None

    def links(self) -> list[LinkStatus]:
        return [
            LinkStatus(ep, link.connected, link.server_id, link.last_error)
            for ep, (link, _) in self._links.items()
        ]

    def connected_servers(self, exclude: Link | None = None) -> list[str]:
        return sorted(
            {link.server_id for link, _ in self._links.values() if link is not exclude and link.server_id}
        )

    # --- LinkOwner --------------------------------------------------------------------------------

    def on_welcome(self, link: Link, welcome: pb.Welcome) -> None:
        if not self.config.follow_peers:
            return
        peers = set()
        for p in welcome.peers:
            try:
                peers.add(_norm(p))
            except ValueError:
                log.warning("server %s announced a bad peer endpoint %r", link.endpoint, p)
        if self._peers.get(link.endpoint) != peers:
            self._peers[link.endpoint] = peers
            self._reconcile()

    def try_acquire_connection(self) -> bool:
        if self._active_connections >= self.config.max_connections:
            return False
        self._active_connections += 1
        return True

    def release_connection(self) -> None:
        self._active_connections -= 1

    # --- internals --------------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Links for --server endpoints and for the peers announced by servers we link to; others stop."""
        tg = self._tg
        if tg is None:
            return
        wanted = set(self._static)
        for ep in list(self._links):
            wanted |= self._peers.get(ep, set())
        for ep in sorted(wanted - self._links.keys()):
            link = Link(ep, self)
            self._links[ep] = (link, tg.create_task(link.run(), name=f"tunnel-agent-link-{ep}"))
            log.info("tunnel agent: linking to server %s", ep)
        for ep in sorted(self._links.keys() - wanted):
            log.info("tunnel agent: server %s is no longer announced; unlinking", ep)
            _, task = self._links.pop(ep)
            self._peers.pop(ep, None)
            task.cancel()  # the TaskGroup awaits it

    async def _watch_certs(self) -> None:
        files = TLSFiles(self.config.cert_file, self.config.key_file, self.config.ca_file)
        last = await asyncio.to_thread(files.stamp)
        while True:
            await self.sleep(self.config.cert_check_interval)
            stamp = await asyncio.to_thread(files.stamp)
            if stamp is None or stamp == last:
                continue
            try:
                await asyncio.to_thread(files.load)
            except (OSError, ValueError) as e:
                log.warning("tunnel agent: certificate files changed but are not usable yet: %s", e)
                continue  # likely mid-rotation (cert written, key not yet): look again next time
            last = stamp
            self.metrics.cert_reloads += 1
            log.info("tunnel agent: certificate files changed; reconnecting with them")
            for link, _ in self._links.values():
                link.request_rotation()


def _norm(endpoint: str) -> str:
    host, port = split_hostport(endpoint)
    return format_hostport(host, port)
