"""Probes: a direct probe of a peer (TCP connect to its kubelet port AND an mTLS GET of its agent's
/healthz, checking the peer's node identity) and an indirect probe (ask another peer's agent to probe
the target: POST /probe?target=<node>)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from edge.aio import within
from edge.health.tls import node_identity
from edge.tunnel.protocol import format_hostport

_MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    address: str


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


DirectProbe = Callable[[Peer], Awaitable[ProbeResult]]


class HTTPError(Exception):
    pass


async def https_request(
    host: str,
    port: int,
    method: str,
    path: str,
    ctx: ssl.SSLContext,
    *,
    expect_node: str,
    timeout: float,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request over mTLS to a peer agent whose certificate must name node `expect_node`.
    Raises OSError/TimeoutError/HTTPError."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx, limit=_MAX_BODY)
        try:
            who = node_identity(writer.get_extra_info("peercert"))
            if who != expect_node:
                raise HTTPError(f"peer certificate names node {who!r}, expected {expect_node!r}")
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: {format_hostport(host, port)}\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode("latin-1")
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status_line = head.split(b"\r\n", 1)[0].split(b" ")
            if len(status_line) < 2 or not status_line[1].isdigit():
                raise HTTPError(f"bad status line {head[:64]!r}")
            length = None
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length is None or length > _MAX_BODY:
                raise HTTPError("missing or too large Content-Length")
            body = await reader.readexactly(length)
            return int(status_line[1]), body
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            raise HTTPError(f"bad answer: {e!r}") from e
        finally:
            writer.transport.abort()
            with contextlib.suppress(Exception):
                await within(writer.wait_closed(), 1.0)


class Prober:
    def __init__(
        self,
        ctx: Callable[[], ssl.SSLContext],
        *,
        peer_port: int,
        kubelet_port: int,
        timeout: float,
    ) -> None:
        self._ctx = ctx
        self.peer_port = peer_port
        self.kubelet_port = kubelet_port
        self.timeout = timeout

    async def direct(self, peer: Peer) -> ProbeResult:
        kubelet, agent = await asyncio.gather(self._tcp(peer), self._healthz(peer))
        return ProbeResult(kubelet == "ok" and agent == "ok", {"kubelet": kubelet, "agent": agent})

    async def indirect(self, via: Peer, target: str) -> ProbeResult:
        """Ask `via`'s agent to probe `target`; failing to reach `via` is a failed (not a negative) answer."""
        path = f"/probe?target={quote(target, safe='')}"
        try:
            status, body = await https_request(
                via.address,
                self.peer_port,
                "POST",
                path,
                self._ctx(),
                expect_node=via.name,
                timeout=2 * self.timeout + 1.0,
            )
            if status != 200:
                return ProbeResult(False, {"via": via.name, "error": f"HTTP {status}"})
            answer = json.loads(body)
            ok = bool(answer.get("ok"))
            return ProbeResult(ok, {"via": via.name, "ok": ok, **dict(answer.get("detail") or {})})
        except (OSError, TimeoutError, HTTPError, ValueError) as e:
            return ProbeResult(False, {"via": via.name, "error": _err(e)})

    async def _tcp(self, peer: Peer) -> str:
        try:
            _, writer = await within(asyncio.open_connection(peer.address, self.kubelet_port), self.timeout)
        except (OSError, TimeoutError) as e:
            return _err(e)
        writer.transport.abort()
        return "ok"

    async def _healthz(self, peer: Peer) -> str:
        try:
            status, _ = await https_request(
                peer.address,
                self.peer_port,
                "GET",
                "/healthz",
                self._ctx(),
                expect_node=peer.name,
                timeout=self.timeout,
            )
        except (OSError, TimeoutError, HTTPError) as e:
            return _err(e)
        return "ok" if status == 200 else f"HTTP {status}"


def _err(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timeout"
    return f"{type(e).__name__}: {e}"[:200]
