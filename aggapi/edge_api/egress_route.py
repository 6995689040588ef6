"""Where a CONNECT from kube-apiserver's egress goes: through the tunnel, or straight out of this pod.

kube-apiserver sends *all* of its `cluster` egress through one proxy: kubelets, but also webhooks and
aggregated API servers (aggapi included). The tunnel alone reaches only nodes with a connected agent, so:

1. a destination that is an edge node (by name or by any address on its Node), or a node whose agent
   is connected, goes through the tunnel (503 when the agent is not connected: never around it);
2. anything else is dialled directly when it is inside --egress-direct-cidrs (an IP), or when it is a
   name under --egress-direct-domains that resolves inside those ranges (e.g. `svc` names of webhooks);
3. everything else is refused (403) with the reason: never an open proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aggapi.controllers import nodes as n
from aggapi.controllers.nodes import NodeDirectory
from aggapi.tunnel import ByteConn, DialError
from aggapi.tunnel.conn import close_stream

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_ids = itertools.count(1)
TUNNEL, DIRECT, RESOLVE, REFUSE = "tunnel", "direct", "resolve", "refuse"


class Tunnel(Protocol):
    async def dial(self, target_host: str, port: int, *, timeout: float | None = None) -> ByteConn: ...

    def has_agent(self, node: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class DirectPolicy:
    cidrs: tuple[Network, ...] = ()
    domains: tuple[str, ...] = ()  # lower-case, without leading/trailing dots

    @staticmethod
    def parse(cidrs: Sequence[str], domains: Sequence[str]) -> DirectPolicy:
        return DirectPolicy(
            tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()),
            tuple(d.strip().strip(".").lower() for d in domains if d.strip().strip(".")),
        )

    def allows_ip(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.cidrs)

    def matches_domain(self, host: str) -> bool:
        h = host.strip(".").lower()
        return any(h == d or h.endswith("." + d) for d in self.domains)


class DirectConn:
    """A plain TCP connection with the interface splice() uses (ByteConn)."""

    node = ""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str) -> None:
        self._reader, self._writer = reader, writer
        self.conn_id = f"direct-{next(_ids)}"
        self.target = target

    def __repr__(self) -> str:
        return f"<DirectConn {self.conn_id} {self.target}>"

    async def read(self, n: int = 32 * 1024) -> bytes:
        return await self._reader.read(n)

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close_write(self) -> None:
        if self._writer.can_write_eof() and not self._writer.is_closing():
            self._writer.write_eof()

    def abort(self, reason: str = "closed") -> None:
        self._writer.transport.abort()

    async def close(self) -> None:
        await close_stream(self._writer, clean=False)


class RoutingDialer:
    """The egress's Dialer: the tunnel for edge nodes, a direct connection for allowed destinations."""

    def __init__(
        self,
        tunnel: Tunnel,
        nodes: NodeDirectory,
        policy: DirectPolicy,
        *,
        dial_timeout: float = 10.0,
    ) -> None:
        self._tunnel = tunnel
        self._nodes = nodes
        self.policy = policy
        self._timeout = dial_timeout

    async def dial(self, target_host: str, port: int, *, timeout: float | None = None) -> ByteConn:
        t = self._timeout if timeout is None else timeout
        informer = self._nodes.informer
        if informer is not None and not informer.has_synced:
            # Until Nodes are known, an edge node's address could look like any other: wait, bounded.
            try:
                async with asyncio.timeout(t):
                    await informer.wait_synced()
            except TimeoutError:
                raise DialError(503, "aggapi has not listed the cluster's Nodes yet; try again") from None
        how, address = self.route(target_host)
        if how == TUNNEL:
            return await self._tunnel.dial(address or target_host, port, timeout=t)
        if how == RESOLVE:
            return await self._dial_name(target_host, port, t)
        if how == DIRECT:
            return await self._dial_ip(address, port, t, shown=target_host)
        raise DialError(
            403,
            f"{target_host} is not a node that has a tunnel agent, nor allowed by --egress-direct-cidrs or "
            "--egress-direct-domains",
        )

    def route(self, host: str) -> tuple[str, str]:
        """(TUNNEL, node name or ""), (DIRECT, ip), (RESOLVE, "") or (REFUSE, "")."""
        matches = [m for m in (self._nodes.get(host), *self._nodes.by_address(host)) if m is not None]
        for node in matches:
            name = str((node.get("metadata") or {}).get("name", ""))
            if n.is_edge_node(node) or self._tunnel.has_agent(name):
                # By a Hostname/DNS address (kube-apiserver's default preferred address type): the tunnel
                # knows nodes by name and by IP, so name the node.
                return TUNNEL, ("" if _is_ip(host) else name)
        if matches:  # a node without agent that is not an edge node (a cloud node): its InternalIP
            ip = n.internal_ip(matches[0]) or host
            # Not allowed directly: the tunnel answers (no agent connected for that node).
            return (DIRECT, ip) if self.policy.allows_ip(ip) else (TUNNEL, "")
        if self.policy.allows_ip(host):
            return DIRECT, host
        if not _is_ip(host) and self.policy.matches_domain(host):
            return RESOLVE, ""
        if self._nodes.informer is None:
            return TUNNEL, ""  # no Node informer: let the tunnel say why it cannot tell
        return REFUSE, ""

    async def _dial_name(self, host: str, port: int, timeout: float) -> ByteConn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise DialError(504, f"resolving {host}: no answer within {timeout:g}s") from None
        except OSError as exc:
            raise DialError(502, f"resolving {host}: {exc}") from None
        ips = list(dict.fromkeys(str(info[4][0]) for info in infos))
        allowed = [ip for ip in ips if self.policy.allows_ip(ip)]
        if not allowed:
            raise DialError(
                403, f"{host} resolves to {', '.join(ips) or 'nothing'}, outside --egress-direct-cidrs"
            )
        return await self._dial_ip(allowed[0], port, timeout, shown=host)

    async def _dial_ip(self, ip: str, port: int, timeout: float, *, shown: str) -> ByteConn:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(ip, port)
        except TimeoutError:
            raise DialError(504, f"dial {shown}:{port} (direct): no answer within {timeout:g}s") from None
        except OSError as exc:
            raise DialError(502, f"dial {shown}:{port} (direct): {exc.strerror or exc}") from None
        with contextlib.suppress(OSError):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.debug("egress: %s:%d dialled directly (%s)", shown, port, ip)
        return DirectConn(reader, writer, f"{shown}:{port}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
