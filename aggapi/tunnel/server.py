"""The tunnel server: agents' gRPC port (mTLS) and dial() for everything that needs a node's kubelet.

Every node's agent dials in and keeps one Control stream (Hello → Welcome, then Dial/Ping from us,
DialResult/Pong from it). For each dial the agent opens one Stream call carrying the conn_id, so each
tunnelled connection has its own HTTP/2 flow control. The node is always the one named by the verified
client certificate; Hello and Stream calls naming anything else are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from aggapi.tunnel.config import AgentInfo, TunnelServerConfig
from aggapi.tunnel.conn import TunnelConn
from aggapi.tunnel.creds import ServerCertFiles
from aggapi.tunnel.errors import DialError
from aggapi.tunnel.identity import PeerIdentity
from aggapi.tunnel.registry import AgentSession, PendingDial, Registry
from aggapi.tunnel.session import ControlHandler
from edge.tunnel.protocol import CONN_ID_METADATA, canonical_host, format_hostport, pb, pb_grpc

log = logging.getLogger(__name__)


class NodeAddresses(Protocol):
    """The Node's addresses as the cluster knows them (status.addresses); None when there is no such Node."""

    async def addresses(self, node: str) -> set[str] | None: ...


@dataclass(frozen=True, slots=True)
class TunnelStats:
    agents: int
    pending_dials: int
    active_connections: int
    dials: int
    dial_errors: int


class TunnelServer:
    """`await run()` serves the agent port until cancelled; `await dial(host, port)` reaches a node."""

    def __init__(self, config: TunnelServerConfig, node_addresses: NodeAddresses) -> None:
        self.config = config
        self.server_id = config.server_id or uuid.uuid4().hex[:12]
        self._nodes = node_addresses
        self._registry = Registry()
        self._identity = PeerIdentity()
        self._control = ControlHandler(config, self.server_id, self._registry, self._identity, node_addresses)
        self._started = asyncio.Event()
        self._port = 0
        self._active = 0
        self._dials = 0
        self._dial_errors = 0

    # --- public API -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound agent port (useful with config.port = 0); 0 until started."""
        return self._port

    async def wait_started(self) -> None:
        await self._started.wait()

    def agents(self) -> dict[str, AgentInfo]:
        return self._registry.agents()

    def has_agent(self, node: str) -> bool:
        """Whether an agent of `node` is connected to this replica."""
        return self._registry.session(node) is not None

    def set_peers(self, peers: Sequence[str]) -> None:
        """Replace the replica list agents are told about (e.g. from replica discovery); every connected
        agent gets a new Welcome and links to replicas it does not know yet."""
        self._control.peers = tuple(peers)
        for node in self._registry.agents():
            session = self._registry.session(node)
            if session is not None:
                with contextlib.suppress(asyncio.QueueFull):
                    session.outbox.put_nowait(self._control.welcome(session))

    def stats(self) -> TunnelStats:
        return TunnelStats(
            agents=len(self._registry.agents()),
            pending_dials=self._registry.pending_count(),
            active_connections=self._active,
            dials=self._dials,
            dial_errors=self._dial_errors,
        )

    async def dial(self, target_host: str, port: int, *, timeout: float | None = None) -> TunnelConn:
        """Open a connection to `target_host:port` on an edge node through its agent.

        target_host is a node name or one of a connected node's registered addresses. Raises DialError
        (with the HTTP status a proxy should answer) when the target is not allowed or not reachable.
        """
        self._dials += 1
        try:
            return await self._dial(
                target_host, port, self.config.dial_timeout if timeout is None else timeout
            )
        except DialError as e:
            self._dial_errors += 1
            log.info("tunnel dial %s refused: %s", format_hostport(target_host, port), e.message)
            raise

    async def run(self) -> None:
        server = grpc.aio.server(options=self._server_options())
        pb_grpc.add_TunnelServicer_to_server(_Servicer(self), server)
        creds = await asyncio.to_thread(self._credentials)
        address = format_hostport(self.config.bind_address, self.config.port)
        self._port = server.add_secure_port(address, creds)
        if not self._port:
            raise OSError(f"tunnel server: cannot listen on {address}")
        await server.start()
        log.info("tunnel server %s listening for agents on %s", self.server_id, address)
        self._started.set()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            self._started.clear()
            self._registry.close_all("tunnel server shutting down")
            await server.stop(self.config.shutdown_grace)
            log.info("tunnel server %s stopped", self.server_id)

    # --- internals --------------------------------------------------------------------------------

    async def _dial(self, host: str, port: int, timeout: float) -> TunnelConn:
        if port not in self.config.allowed_ports:
            allowed = ", ".join(str(p) for p in sorted(self.config.allowed_ports))
            raise DialError(403, f"port {port} is not a tunnel port (allowed: {allowed})")
        session = await self._session_for(host)
        target = canonical_host(host) if host != session.node else host
        if not session.allows(target, port):
            raise DialError(
                403, f"node {session.node}'s tunnel agent does not allow {format_hostport(target, port)}"
            )
        conn_id = secrets.token_hex(16)  # unguessable: a Stream call must name a dial we sent
        pending = PendingDial(conn_id, session, target, port)
        self._registry.add_pending(pending)
        dial = pb.Dial(conn_id=conn_id, host=target, port=port, timeout_ms=max(1, int(timeout * 1000)))
        try:
            async with asyncio.timeout(timeout):
                try:
                    session.outbox.put_nowait(pb.ServerMessage(dial=dial))
                except asyncio.QueueFull:
                    raise DialError(
                        503, f"tunnel agent of node {session.node} has too many pending dials"
                    ) from None
                conn = await pending.future
        except TimeoutError:
            pending.abandon()
            raise DialError(
                504,
                f"dial {format_hostport(target, port)} on node {session.node}: no answer within {timeout:g}s",
            ) from None
        except BaseException:
            pending.abandon()
            raise
        finally:
            self._registry.remove_pending(conn_id)
        return conn

    async def _session_for(self, host: str) -> AgentSession:
        if _is_ip(host):
            return self._registry.resolve_address(host)
        session = self._registry.session(host)
        if session is not None:
            return session
        if self._registry.known_node(host):
            raise DialError(503, f"no tunnel agent is connected for node {host}")
        try:
            async with asyncio.timeout(self.config.node_lookup_timeout):
                known = await self._nodes.addresses(host)
        except TimeoutError:
            raise DialError(503, f"looking up node {host} timed out") from None
        if known is None:
            raise DialError(403, f"{host} is not a node known to the cluster")
        raise DialError(503, f"no tunnel agent is connected for node {host}")

    async def _stream(self, context: Any) -> None:
        node = self._identity.node_of(context)
        if node is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "not a node certificate")
            return
        conn_id = dict(context.invocation_metadata()).get(CONN_ID_METADATA, "")
        pending = self._registry.take_pending(conn_id, node)
        if pending is None:
            # Unknown, already answered, timed out, or sent to another node: never attach it to anything.
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no pending dial {conn_id[:8]} for node {node}")
            return
        session = pending.session
        conn = TunnelConn(context, node=node, host=pending.host, port=pending.port, conn_id=conn_id)
        if not pending.deliver(conn):
            return  # the dialer gave up: ending the call makes the agent close its socket
        self._active += 1
        session.active_connections += 1
        try:
            await conn.serve()
        finally:
            self._active -= 1
            session.active_connections -= 1

    def _credentials(self) -> grpc.ServerCredentials:
        # Re-read on the next agent handshake after the files change: a rotated serving certificate or
        # agent CA needs no restart; established agent sessions keep their TLS session.
        files = ServerCertFiles(
            Path(self.config.cert_file), Path(self.config.key_file), Path(self.config.agent_ca_file)
        )
        initial = files.load()
        if initial is None:
            raise OSError(f"tunnel server: cannot load {self.config.cert_file} / {self.config.key_file}")
        return grpc.dynamic_ssl_server_credentials(initial, files.fetch, require_client_authentication=True)

    def _server_options(self) -> list[tuple[str, int]]:
        c = self.config
        return [
            ("grpc.keepalive_time_ms", int(c.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(c.keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            # Agents ping every 20 s (edge NATs drop idle flows); allow it instead of answering GOAWAY.
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.max_concurrent_streams", c.max_streams_per_agent),
            # A fixed stream window: BDP probing would grow it to ~4 MiB, pinned by every stalled reader.
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", c.stream_window),
            ("grpc.so_reuseport", 0),
        ]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _Servicer(pb_grpc.TunnelServicer):  # type: ignore[misc]
    def __init__(self, server: TunnelServer) -> None:
        self._server = server

    async def Control(self, request_iterator: AsyncIterator[pb.AgentMessage], context: Any) -> None:
        await self._server._control.handle(context)

    async def Stream(self, request_iterator: AsyncIterator[pb.Frame], context: Any) -> None:
        await self._server._stream(context)
