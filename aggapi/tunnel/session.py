"""The server's half of an agent's Control stream: authenticate, register, Dial/Ping vs DialResult/Pong."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from typing import Any

import grpc

from aggapi.machinery.aio import within
from aggapi.tunnel.config import TunnelServerConfig
from aggapi.tunnel.errors import DialError
from aggapi.tunnel.identity import PeerIdentity
from aggapi.tunnel.registry import AgentSession, Registry
from edge.tunnel.protocol import canonical_host, pb

log = logging.getLogger(__name__)

# What each agent-side dial failure means to whoever asked for the connection.
_DIAL_STATUS = {
    pb.DialResult.REFUSED: 502,
    pb.DialResult.TIMEOUT: 504,
    pb.DialResult.NOT_ALLOWED: 403,
    pb.DialResult.TOO_MANY: 503,
    pb.DialResult.UNREACHABLE: 502,
}


class ControlHandler:
    def __init__(
        self,
        config: TunnelServerConfig,
        server_id: str,
        registry: Registry,
        identity: PeerIdentity,
        node_addresses: Any,
    ) -> None:
        self._config = config
        self._server_id = server_id
        self._registry = registry
        self._identity = identity
        self._nodes = node_addresses
        self.peers: tuple[str, ...] = config.peers

    def welcome(self, session: AgentSession) -> pb.ServerMessage:
        return pb.ServerMessage(
            welcome=pb.Welcome(
                server_id=self._server_id,
                peers=list(self.peers),
                accepted_addresses=list(session.addresses),
                rejected_addresses=list(session.rejected),
                ping_interval_ms=int(self._config.ping_interval * 1000),
            )
        )

    async def handle(self, context: Any) -> None:
        session = await self._admit(context)
        if session is None:
            return
        log.info(
            "tunnel agent for node %s connected (version %s, addresses %s)",
            session.node,
            session.agent_version or "?",
            ", ".join(session.addresses) or "none",
        )
        tasks = [
            asyncio.create_task(self._reader(context, session), name=f"tunnel-control-read-{session.node}"),
            asyncio.create_task(self._writer(context, session), name=f"tunnel-control-write-{session.node}"),
            asyncio.create_task(self._pinger(session), name=f"tunnel-control-ping-{session.node}"),
            asyncio.create_task(session.closed.wait(), name=f"tunnel-control-closed-{session.node}"),
        ]
        reason = "control stream ended"
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    reason = f"control stream failed: {t.exception()}"
        except asyncio.CancelledError:
            reason = "agent disconnected"
            raise
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            reason = session.close_reason or reason
            self._registry.unregister(session, reason)
            log.info("tunnel agent for node %s disconnected: %s", session.node, reason)

    async def _admit(self, context: Any) -> AgentSession | None:
        cfg = self._config
        node = self._identity.node_of(context)
        if node is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "client certificate must be CN=system:node:<name>, O=system:nodes",
            )
            return None
        try:
            msg = await within(context.read(), cfg.hello_timeout)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"no Hello within {cfg.hello_timeout:g}s")
            return None
        if msg is grpc.aio.EOF or msg.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be Hello")
            return None
        hello = msg.hello
        if hello.node_name != node:
            log.warning(
                "refused tunnel agent: certificate is node %s but Hello names %r", node, hello.node_name
            )
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"certificate is for node {node}, Hello names node {hello.node_name!r}",
            )
            return None
        if self._server_id in hello.connected_servers:
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"agent already has a session with server {self._server_id} through another endpoint",
            )
            return None
        try:
            known = await within(self._nodes.addresses(node), cfg.node_lookup_timeout)
        except TimeoutError:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"looking up node {node} timed out")
            return None
        if known is None:
            log.warning("refused tunnel agent for unknown node %s", node)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"node {node} is not known to the cluster")
            return None
        known_ips = {canonical_host(a) for a in known}
        announced = [canonical_host(a) for a in hello.addresses]
        accepted = tuple(dict.fromkeys(a for a in announced if a in known_ips and _is_ip(a)))
        rejected = tuple(dict.fromkeys(a for a in announced if a not in accepted))
        if rejected:
            log.warning("node %s announced addresses not on its Node object, ignored: %s", node, rejected)
        allowed = frozenset((canonical_host(t.host), t.port) for t in hello.allowed)
        session = AgentSession(
            node=node,
            agent_version=hello.agent_version,
            addresses=accepted,
            rejected=rejected,
            allowed=allowed,
            max_pending=cfg.max_pending_dials,
        )
        welcome = self.welcome(session)
        try:
            await within(context.write(welcome), cfg.control_write_timeout)
        except (TimeoutError, grpc.aio.AioRpcError, grpc.aio.UsageError) as e:
            log.info("tunnel agent for node %s went away before Welcome: %s", node, e)
            return None
        self._registry.register(session)  # only now: a session that never got its Welcome is not usable
        if tuple(welcome.welcome.peers) != tuple(self.peers):
            # The replica list changed while this Welcome was on its way (set_peers only reaches
            # registered sessions): send the current one too.
            with contextlib.suppress(asyncio.QueueFull):
                session.outbox.put_nowait(self.welcome(session))
        return session

    async def _reader(self, context: Any, session: AgentSession) -> None:
        # The agent answers every Ping, so two silent intervals mean it is gone (or wedged).
        silence = 2 * self._config.ping_interval + self._config.control_write_timeout
        while True:
            msg = await within(context.read(), silence)
            if msg is grpc.aio.EOF:
                session.close("agent closed the control stream")
                return
            kind = msg.WhichOneof("msg")
            if kind == "dial_result":
                r = msg.dial_result
                if r.code != pb.DialResult.OK:
                    status = _DIAL_STATUS.get(r.code, 502)
                    message = f"node {session.node}: {r.error or pb.DialResult.Code.Name(r.code)}"
                    self._registry.fail_pending(r.conn_id, session.node, DialError(status, message))
            elif kind == "hello":
                session.close("protocol error: a second Hello")
                return

    async def _writer(self, context: Any, session: AgentSession) -> None:
        while True:
            msg = await session.outbox.get()
            await within(context.write(msg), self._config.control_write_timeout)

    async def _pinger(self, session: AgentSession) -> None:
        seq = 0
        while True:
            await asyncio.sleep(self._config.ping_interval)
            seq += 1
            # A full outbox means the writer is behind on dials: the link is busy, not dead.
            with contextlib.suppress(asyncio.QueueFull):
                session.outbox.put_nowait(pb.ServerMessage(ping=pb.Ping(seq=seq)))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
