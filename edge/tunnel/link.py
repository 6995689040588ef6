"""The agent's connection to one tunnel server: TLS channel, Control session, reconnect with backoff.

A session ends when the server closes it, goes silent, the channel fails, or the certificate files
changed (then the link reconnects at once with the new files). Connections carried by a channel outlive
its session: the channel is closed only when they are done (or after drain_timeout), so a certificate
rotation does not cut an open `kubectl exec`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import grpc

from edge.aio import within
from edge.tunnel.config import AgentConfig
from edge.tunnel.creds import TLSFiles
from edge.tunnel.metrics import AgentMetrics
from edge.tunnel.pipe import ChannelUse, connect_target, pipe
from edge.tunnel.protocol import canonical_host, pb, pb_grpc

log = logging.getLogger(__name__)

_OUTBOX = 1024


class LinkOwner(Protocol):
    config: AgentConfig
    metrics: AgentMetrics
    sleep: Callable[[float], Awaitable[None]]
    random: Callable[[], float]

    def connected_servers(self, exclude: Link) -> list[str]: ...
    def on_welcome(self, link: Link, welcome: pb.Welcome) -> None: ...
    def try_acquire_connection(self) -> bool: ...
    def release_connection(self) -> None: ...


class Link:
    def __init__(self, endpoint: str, owner: LinkOwner) -> None:
        self.endpoint = endpoint
        self.server_id = ""  # set while a session is up
        self.last_error = ""
        self._owner = owner
        self._cfg = owner.config
        self._files = TLSFiles(self._cfg.cert_file, self._cfg.key_file, self._cfg.ca_file)
        self._targets = self._cfg.targets()
        self._rotate = asyncio.Event()

    @property
    def connected(self) -> bool:
        return bool(self.server_id)

    def request_rotation(self) -> None:
        """Reconnect with freshly read certificate files (existing connections finish on the old channel)."""
        self._rotate.set()

    async def run(self) -> None:
        attempt = 0
        async with asyncio.TaskGroup() as tg:  # connections and channel drainers of this link
            while True:
                try:
                    outcome = await self._session(tg)
                except Exception:  # a bug in one session must not end the agent: log, back off, retry
                    log.exception("tunnel session with %s crashed", self.endpoint)
                    outcome = "failed"
                if outcome == "rotate":
                    attempt = 0  # at once, with the new files
                else:
                    attempt = 0 if outcome == "ended" else attempt + 1
                    if outcome == "duplicate":
                        attempt = 64  # an alias of a server we already have: retry rarely
                    base = min(self._cfg.backoff_max, self._cfg.backoff_initial * 2 ** min(attempt, 32))
                    # Jitter spreads a fleet's reconnects after a server restart.
                    await self._owner.sleep(base * (0.5 + self._owner.random() / 2))
                self._owner.metrics.reconnects += 1

    async def _session(self, tg: asyncio.TaskGroup) -> str:
        """One connection + Control session. Returns rotate | ended (after a Welcome) | failed | duplicate."""
        self._rotate.clear()
        try:
            creds = await asyncio.to_thread(self._files.credentials)
        except (OSError, ValueError) as e:
            self._failed(f"cannot load TLS files: {e}")
            return "failed"
        channel = grpc.aio.secure_channel(self.endpoint, creds, options=self._channel_options())
        use = ChannelUse()
        call = pb_grpc.TunnelStub(channel).Control()
        outcome = "failed"
        try:
            welcome = await self._handshake(call)
            if isinstance(welcome, str):
                return welcome
            outcome = "ended"
            self.server_id = welcome.server_id
            self.last_error = ""
            self._owner.metrics.sessions_established += 1
            self._owner.metrics.servers_connected += 1
            log.info("tunnel session with %s (server %s) established", self.endpoint, self.server_id)
            self._owner.on_welcome(self, welcome)
            try:
                interval = max(welcome.ping_interval_ms / 1000, 1.0)
                outcome = await self._serve(call, pb_grpc.TunnelStub(channel), use, tg, interval)
            finally:
                self._owner.metrics.servers_connected -= 1
                self.server_id = ""
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.ALREADY_EXISTS:
                log.info("tunnel server at %s is already connected through another endpoint", self.endpoint)
                self.last_error = e.details() or "duplicate"
                return "duplicate"
            self._failed(f"{e.code().name}: {e.details()}")
            return "failed"
        except (TimeoutError, ConnectionError) as e:
            self._failed(f"{type(e).__name__}: {e}")
            return "failed"
        finally:
            call.cancel()
            tg.create_task(self._drain(channel, use), name=f"tunnel-agent-drain-{self.endpoint}")
        return outcome

    async def _handshake(self, call: grpc.aio.StreamStreamCall) -> pb.Welcome | str:
        """The server's Welcome, or the session outcome (failed | duplicate) when there is none."""
        c = self._cfg
        hello = pb.Hello(
            node_name=c.node_name,
            addresses=list(c.addresses),
            agent_version=c.version,
            allowed=[pb.Target(host=h, port=p) for h, p in sorted(self._targets)],
            connected_servers=self._owner.connected_servers(exclude=self),
        )
        await within(call.write(pb.AgentMessage(hello=hello)), c.connect_timeout)
        msg = await within(call.read(), c.connect_timeout)
        if msg is grpc.aio.EOF:
            code = await within(call.code(), c.connect_timeout)
            details = await within(call.details(), c.connect_timeout)
            if code == grpc.StatusCode.ALREADY_EXISTS:
                log.info("tunnel server at %s is already connected through another endpoint", self.endpoint)
                self.last_error = details
                return "duplicate"
            self._failed(f"server refused the session: {code.name}: {details}")
            return "failed"
        if msg.WhichOneof("msg") != "welcome":
            self._failed("protocol error: the server did not answer Hello with Welcome")
            return "failed"
        if msg.welcome.rejected_addresses:
            log.warning(
                "tunnel server ignored addresses not on Node %s: %s",
                c.node_name,
                ", ".join(msg.welcome.rejected_addresses),
            )
        welcome: pb.Welcome | str = msg.welcome
        return welcome

    async def _serve(
        self,
        call: grpc.aio.StreamStreamCall,
        stub: pb_grpc.TunnelStub,
        use: ChannelUse,
        tg: asyncio.TaskGroup,
        ping_interval: float,
    ) -> str:
        outbox: asyncio.Queue[pb.AgentMessage] = asyncio.Queue(maxsize=_OUTBOX)

        def send(msg: pb.AgentMessage) -> None:
            try:
                outbox.put_nowait(msg)
            except asyncio.QueueFull:
                log.warning("tunnel control outbox to %s full; dropping a message", self.endpoint)

        def report(result: pb.DialResult) -> None:
            self._owner.metrics.dial_failures[pb.DialResult.Code.Name(result.code)] += 1
            send(pb.AgentMessage(dial_result=result))

        async def reader() -> str:
            silence = 2 * ping_interval + self._cfg.connect_timeout  # the server pings every interval
            while True:
                msg = await within(call.read(), silence)
                if msg is grpc.aio.EOF:
                    return "ended"
                kind = msg.WhichOneof("msg")
                if kind == "ping":
                    send(pb.AgentMessage(pong=pb.Pong(seq=msg.ping.seq)))
                elif kind == "dial":
                    dial = msg.dial
                    tg.create_task(
                        self._dial(dial, stub, use, report), name=f"tunnel-agent-conn-{dial.conn_id[:8]}"
                    )
                elif kind == "welcome":
                    self._owner.on_welcome(self, msg.welcome)

        async def writer() -> str:
            while True:
                await within(call.write(await outbox.get()), self._cfg.write_timeout)

        async def rotation() -> str:
            await self._rotate.wait()
            log.info("tunnel: certificate files changed; reconnecting to %s", self.endpoint)
            return "rotate"

        tasks = [
            asyncio.create_task(reader(), name=f"tunnel-agent-control-read-{self.endpoint}"),
            asyncio.create_task(writer(), name=f"tunnel-agent-control-write-{self.endpoint}"),
            asyncio.create_task(rotation(), name=f"tunnel-agent-rotation-{self.endpoint}"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        first = done.pop()
        if first.cancelled():
            return "ended"
        if (exc := first.exception()) is not None:
            self._failed(f"session ended: {exc!r}")
            return "failed"
        log.info("tunnel session with %s ended", self.endpoint)
        return str(first.result())

    async def _dial(
        self, dial: pb.Dial, stub: pb_grpc.TunnelStub, use: ChannelUse, report: Callable[..., None]
    ) -> None:
        owner, cfg = self._owner, self._cfg
        owner.metrics.dials += 1
        host = canonical_host(dial.host)
        if host == canonical_host(cfg.node_name):
            host = canonical_host(cfg.addresses[0])  # a dial by node name reaches the primary address
        if (host, dial.port) not in self._targets:
            report(
                pb.DialResult(
                    conn_id=dial.conn_id,
                    code=pb.DialResult.NOT_ALLOWED,
                    error=f"{host}:{dial.port} is not on the agent's allow-list",
                )
            )
            return
        if not owner.try_acquire_connection():
            report(
                pb.DialResult(
                    conn_id=dial.conn_id,
                    code=pb.DialResult.TOO_MANY,
                    error=f"agent connection limit ({cfg.max_connections}) reached",
                )
            )
            return
        use.acquire()
        try:
            timeout = min(max(dial.timeout_ms, 1) / 1000, cfg.max_dial_timeout)
            pair = await connect_target(host, dial.port, timeout, dial.conn_id, report)
            if pair is None:
                return
            owner.metrics.connections_total += 1
            owner.metrics.connections_active += 1
            try:
                await pipe(stub, dial.conn_id, pair[0], pair[1], owner.metrics, cfg.write_timeout)
            finally:
                owner.metrics.connections_active -= 1
        except Exception:  # one connection's bug must not take the link's TaskGroup down
            log.exception("tunnel connection %s failed", dial.conn_id[:8])
        finally:
            use.release()
            owner.release_connection()

    async def _drain(self, channel: grpc.aio.Channel, use: ChannelUse) -> None:
        try:
            await within(use.idle.wait(), self._cfg.drain_timeout)
        except TimeoutError:
            log.warning(
                "closing the old tunnel channel to %s with %d connections open", self.endpoint, use.active
            )
        finally:
            await channel.close(grace=None)

    def _failed(self, message: str) -> None:
        self.last_error = message
        self._owner.metrics.session_failures += 1
        log.warning("tunnel session with %s: %s", self.endpoint, message)

    def _channel_options(self) -> list[tuple[str, object]]:
        c = self._cfg
        opts: list[tuple[str, object]] = [
            ("grpc.keepalive_time_ms", int(c.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(c.keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            # A fixed stream window: BDP probing would grow it to ~4 MiB, pinned by every stalled reader.
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", c.stream_window),
            # Reconnecting is ours (with fresh certificate files); grpc must not retry under us.
            ("grpc.enable_retries", 0),
            # One TCP connection per link even if several links name the same host (own subchannel pool).
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if c.server_name:
            opts.append(("grpc.ssl_target_name_override", c.server_name))
        return opts
