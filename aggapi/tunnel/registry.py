"""Who is connected: node → agent session, address → node, and the dials waiting for an agent.

Everything here is plain bookkeeping on the event loop (no I/O), so the invariants are easy to keep:
a session's addresses and pending dials leave the maps in the same step that unregisters it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aggapi.tunnel.config import AgentInfo
from aggapi.tunnel.conn import TunnelConn
from aggapi.tunnel.errors import DialError
from edge.tunnel.protocol import canonical_host, pb

log = logging.getLogger(__name__)


class AgentSession:
    """One agent's Control stream on this server. Messages to the agent go through a bounded outbox,
    written by a single writer loop (grpc allows one write at a time per call)."""

    def __init__(
        self,
        *,
        node: str,
        agent_version: str,
        addresses: tuple[str, ...],
        rejected: tuple[str, ...],
        allowed: frozenset[tuple[str, int]],
        max_pending: int,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.agent_version = agent_version
        self.addresses = addresses
        self.rejected = rejected
        self.allowed = allowed  # the agent's own allow-list, as it announced it
        self.connected_since = wall_clock()
        self.outbox: asyncio.Queue[pb.ServerMessage] = asyncio.Queue(maxsize=max_pending)
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.active_connections = 0

    def close(self, reason: str) -> None:
        if not self.closed.is_set():
            self.close_reason = reason
            self.closed.set()

    def allows(self, host: str, port: int) -> bool:
        """Pre-check against the agent's allow-list so a refusal is a clear 403 without a round trip.
        A node-name host means the agent's primary address."""
        if host == self.node:
            host = self.addresses[0] if self.addresses else host
        return (host, port) in self.allowed

    def info(self) -> AgentInfo:
        return AgentInfo(
            node=self.node,
            connected_since=self.connected_since,
            agent_version=self.agent_version,
            addresses=self.addresses,
            rejected_addresses=self.rejected,
            active_connections=self.active_connections,
        )


@dataclass(slots=True)
class PendingDial:
    conn_id: str
    session: AgentSession
    host: str
    port: int
    future: asyncio.Future[TunnelConn] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def deliver(self, conn: TunnelConn) -> bool:
        """Hand the agent's Stream call to the dialer; False if the dialer already gave up."""
        if self.future.done():
            return False
        self.future.set_result(conn)
        return True

    def fail(self, error: DialError) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    def abandon(self) -> None:
        """The dialer is gone (timeout, cancel): release a connection that arrived meanwhile."""
        if self.future.done() and not self.future.cancelled() and self.future.exception() is None:
            self.future.result().abort("the dialer gave up")
        elif not self.future.done():
            self.future.cancel()


class Registry:
    def __init__(self) -> None:
        self._sessions: dict[str, AgentSession] = {}
        self._ip_nodes: dict[str, set[str]] = {}  # connected sessions' accepted addresses
        # Addresses of nodes seen before, kept after their agent left, so a dial to them answers
        # "no agent connected" (503) rather than "not a node" (403). One entry per node ever seen.
        self._last_addresses: dict[str, tuple[str, ...]] = {}
        self._pending: dict[str, PendingDial] = {}

    # --- sessions ---------------------------------------------------------------------------------

    def register(self, session: AgentSession) -> None:
        """Make `session` the node's agent; a previous session for the node is closed (replaced)."""
        old = self._sessions.get(session.node)
        if old is not None:
            self._drop(old, f"replaced by a newer session of node {session.node}")
        self._sessions[session.node] = session
        self._last_addresses[session.node] = session.addresses
        for ip in session.addresses:
            self._ip_nodes.setdefault(ip, set()).add(session.node)

    def unregister(self, session: AgentSession, reason: str) -> None:
        if self._sessions.get(session.node) is session:
            self._drop(session, reason)
        session.close(reason)

    def _drop(self, session: AgentSession, reason: str) -> None:
        del self._sessions[session.node]
        for ip in session.addresses:
            nodes = self._ip_nodes.get(ip)
            if nodes is not None:
                nodes.discard(session.node)
                if not nodes:
                    del self._ip_nodes[ip]
        session.close(reason)
        failed = [p for p in self._pending.values() if p.session is session]
        for p in failed:
            p.fail(
                DialError(502, f"tunnel agent of node {session.node} disconnected during the dial ({reason})")
            )

    def close_all(self, reason: str) -> None:
        for session in list(self._sessions.values()):
            self._drop(session, reason)

    def session(self, node: str) -> AgentSession | None:
        return self._sessions.get(node)

    def agents(self) -> dict[str, AgentInfo]:
        return {node: s.info() for node, s in self._sessions.items()}

    def known_node(self, node: str) -> bool:
        return node in self._last_addresses

    # --- targets ----------------------------------------------------------------------------------

    def resolve_address(self, host: str) -> AgentSession:
        """The connected session serving IP `host`, or a DialError saying why there is none."""
        ip = canonical_host(host)
        nodes = self._ip_nodes.get(ip)
        if nodes:
            if len(nodes) > 1:
                # Private edge networks reuse addresses; Node names stay unique.
                raise DialError(
                    502,
                    f"address {ip} belongs to several nodes ({', '.join(sorted(nodes))}); dial by node name "
                    "(kube-apiserver --kubelet-preferred-address-types=Hostname,...)",
                )
            return self._sessions[next(iter(nodes))]
        for node, addresses in self._last_addresses.items():
            if ip in addresses:
                raise DialError(503, f"no tunnel agent is connected for node {node} (address {ip})")
        raise DialError(403, f"{ip} is not an address of any node known to the tunnel")

    # --- pending dials ----------------------------------------------------------------------------

    def add_pending(self, pending: PendingDial) -> None:
        self._pending[pending.conn_id] = pending

    def remove_pending(self, conn_id: str) -> None:
        self._pending.pop(conn_id, None)

    def take_pending(self, conn_id: str, node: str) -> PendingDial | None:
        """The dial a Stream call answers, if it exists and was sent to this node's agent."""
        pending = self._pending.get(conn_id)
        if pending is None or pending.session.node != node:
            return None
        del self._pending[conn_id]
        return pending

    def fail_pending(self, conn_id: str, node: str, error: DialError) -> None:
        pending = self._pending.get(conn_id)
        if pending is not None and pending.session.node == node:
            pending.fail(error)

    def pending_count(self) -> int:
        return len(self._pending)
