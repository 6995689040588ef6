"""`edgenodes/{name}/proxy/{path}`: any request, forwarded to the node's kubelet through the tunnel.

Authorization happened before (resource edgenodes, subresource proxy, verb from the HTTP method). The
request goes out with the client's query string and end-to-end headers, minus its credentials and any
identity headers; aggapi authenticates to the kubelet with its own client certificate. Responses stream
(`containerLogs?follow=true`), and upgrades (exec/attach/port-forward over WebSocket or SPDY) are spliced.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field

from aiohttp import web

from aggapi.apis.edgenode import EDGENODE
from aggapi.controllers import nodes as n
from aggapi.controllers.nodes import NodeDirectory
from aggapi.edge_api.kubelet import Dialer, KubeletTLS, NoKubeletTLS, kubelet_connection
from aggapi.http import streamproxy
from aggapi.http.requestinfo import RequestInfo
from aggapi.machinery import apierrors
from aggapi.tunnel import DialError
from edge.tunnel.protocol import format_hostport

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    dial_timeout: float = 10.0  # tunnel dial plus the TLS handshake with the kubelet
    stream: streamproxy.StreamProxyConfig = field(default_factory=streamproxy.StreamProxyConfig)


def _unavailable(message: str, code: int = 503) -> apierrors.StatusError:
    # No Retry-After: client-go would retry a proxied request silently for ~10 s otherwise.
    reason = "Timeout" if code == 504 else "ServiceUnavailable"
    return apierrors.StatusError(code, reason, message, retry_after=0)


def kubelet_target(raw_path: str, resource: str) -> str:
    """The kubelet path and query from the raw request target: everything after `<resource>/<name>/proxy`,
    still encoded exactly as the client sent it; the root when nothing follows."""
    path, sep, query = raw_path.partition("?")
    parts = path.split("/")
    for i in range(2, len(parts)):
        if parts[i] == "proxy" and parts[i - 2] == resource:
            rest = "/" + "/".join(parts[i + 1 :])
            return rest + (f"?{query}" if sep and query else "")
    raise apierrors.bad_request("not a proxy path")


class EdgeNodeProxy:
    def __init__(
        self,
        nodes: NodeDirectory,
        tunnel: Dialer | None,
        tls: KubeletTLS,
        config: ProxyConfig | None = None,
    ) -> None:
        self._nodes = nodes
        self._tunnel = tunnel
        self._tls = tls
        self.config = config or ProxyConfig()
        self._open: set[asyncio.StreamWriter] = set()

    def close_streams(self) -> None:
        """End every proxied connection (on shutdown: a `logs -f` or an exec session would otherwise hold
        the graceful shutdown until its timeout). Their clients see the stream end."""
        for writer in list(self._open):
            writer.transport.abort()

    @property
    def open_streams(self) -> int:
        return len(self._open)

    async def __call__(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        name = info.name
        node = self._nodes.get(name)
        if node is None or not n.is_edge_node(node):
            raise apierrors.not_found(EDGENODE.group, EDGENODE.resource, name)
        if self._tunnel is None:
            raise _unavailable(
                f"cannot reach edge node {name}: the edge tunnel is not enabled on this aggapi "
                "(--tunnel-agent-ca-file)"
            )
        endpoint = self._nodes.kubelet_endpoint(name)
        if endpoint is None:
            raise _unavailable(f"edge node {name} has no InternalIP in its status.addresses")
        try:
            ctx = self._tls.context()
        except NoKubeletTLS as exc:
            raise _unavailable(f"cannot reach edge node {name}'s kubelet: {exc}") from None
        target = kubelet_target(request.raw_path, EDGENODE.resource)
        where = f"edge node {name}'s kubelet ({format_hostport(endpoint.address, endpoint.port)})"
        try:
            conn = kubelet_connection(self._tunnel, endpoint, ctx, timeout=self.config.dial_timeout)
            async with conn as (reader, writer):
                self._open.add(writer)
                try:
                    return await streamproxy.forward(
                        request,
                        reader,
                        writer,
                        target=target,
                        host=format_hostport(endpoint.address, endpoint.port),
                        config=self.config.stream,
                    )
                finally:
                    self._open.discard(writer)
        except DialError as exc:
            code = 504 if exc.status == 504 else 503
            raise _unavailable(
                f"error trying to reach {where} through the tunnel: {exc.message}", code
            ) from None
        except ssl.SSLError as exc:
            raise _unavailable(f"TLS with {where} failed: {exc.reason or exc}") from None
        except TimeoutError:
            raise _unavailable(
                f"TLS with {where}: no handshake within {self.config.dial_timeout:g}s", 504
            ) from None
        except (streamproxy.UpstreamError, OSError) as exc:
            raise _unavailable(f"error trying to reach {where}: {exc or type(exc).__name__}") from None
