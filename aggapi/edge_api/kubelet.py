"""Connections to a node's kubelet through the tunnel, with TLS as kube-apiserver speaks it to kubelets:
the kubelet's serving certificate verified against --kubelet-certificate-authority for the node's
InternalIP, and --kubelet-client-certificate presented. The files are re-read when they change.

TLS runs over the tunnel through a local socket pair: one end is spliced to the TunnelConn, the other
carries an ordinary asyncio TLS connection, so the (reader, writer) it yields is what any HTTP code
expects, with the kernel and asyncio providing the flow control in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from aggapi.controllers.nodes import KubeletEndpoint
from aggapi.tunnel import ByteConn, splice
from aggapi.tunnel.conn import close_stream

log = logging.getLogger(__name__)


class NoKubeletTLS(Exception):
    """The proxy cannot talk to kubelets safely (no CA to verify them with)."""


class Dialer(Protocol):
    async def dial(self, target_host: str, port: int, *, timeout: float | None = None) -> ByteConn: ...


@dataclass(frozen=True, slots=True)
class KubeletTLSConfig:
    ca_file: str  # "" → the proxy refuses (kubelets are never contacted unverified)
    cert_file: str = ""
    key_file: str = ""
    check_interval: float = 10.0  # how often the files are checked for changes (on use)


def _stamp(paths: tuple[str, ...]) -> tuple[tuple[int, int, int], ...]:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class KubeletTLS:
    def __init__(self, config: KubeletTLSConfig, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._now = monotonic
        self._paths = tuple(p for p in (config.ca_file, config.cert_file, config.key_file) if p)
        self._ctx: ssl.SSLContext | None = None
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        self._checked = -1e18

    def _build(self) -> ssl.SSLContext:
        c = self.config
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=c.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if c.cert_file:
            ctx.load_cert_chain(c.cert_file, c.key_file)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def context(self) -> ssl.SSLContext:
        """The current context; rebuilt when the files changed (a half-written rotation keeps the old)."""
        if not self.config.ca_file:
            raise NoKubeletTLS(
                "aggapi serve has no --kubelet-certificate-authority, so it does not talk to kubelets "
                "(their serving certificates could not be verified)"
            )
        now = self._now()
        if self._ctx is not None and now - self._checked < self.config.check_interval:
            return self._ctx
        self._checked = now
        try:
            stamp = _stamp(self._paths)
            if self._ctx is None or stamp != self._stamp:
                self._ctx, self._stamp = self._build(), stamp
                log.info("kubelet client TLS loaded from %s", ", ".join(self._paths))
        except (OSError, ssl.SSLError, ValueError) as exc:
            if self._ctx is None:
                raise NoKubeletTLS(f"kubelet TLS files are not usable: {exc}") from None
            log.warning("kubelet TLS files changed but are not usable yet, keeping the current ones: %s", exc)
        return self._ctx


@contextlib.asynccontextmanager
async def kubelet_connection(
    tunnel: Dialer, endpoint: KubeletEndpoint, ctx: ssl.SSLContext, *, timeout: float
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A TLS connection to the kubelet of `endpoint.node`, carried by the node's tunnel agent.

    Dials by node name (node addresses are not unique across private networks) and checks the kubelet's
    certificate for the InternalIP. Raises DialError when the tunnel cannot reach it, ssl.SSLError or
    OSError when the TLS handshake fails."""
    conn = await tunnel.dial(endpoint.node, endpoint.port, timeout=timeout)
    ours, theirs = socket.socketpair()
    pump: asyncio.Task[None] | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        p_reader, p_writer = await asyncio.open_connection(sock=theirs)
        pump = asyncio.create_task(splice(conn, p_reader, p_writer), name=f"kubelet-tunnel:{endpoint.node}")
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                sock=ours, ssl=ctx, server_hostname=endpoint.address, ssl_handshake_timeout=timeout
            )
        yield reader, writer
    finally:
        if writer is not None:
            await close_stream(writer, clean=False)
        else:
            ours.close()
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump  # splice closes the tunnel connection and its end of the pair
        else:
            theirs.close()
            conn.abort("kubelet connection setup failed")
            await conn.close()
