"""Kubelet traffic as kube-apiserver serves it: pods/log, pods/exec, pods/attach, pods/portforward and
nodes/proxy, each sent to the node's kubelet over TLS (the kubelet client certificate) on a
connection dialled through the egress selector's HTTP CONNECT proxy. There is no other route: with no
egress configured every such request is a 503.

Requests carry the client's headers minus hop-by-hop ones, Authorization and Impersonate-*; upgrades
(exec, attach, port-forward, and nodes/proxy when asked) keep Connection/Upgrade and every
Sec-WebSocket-* and X-Stream-Protocol-Version header, and after the kubelet's 101 the bytes are spliced
both ways. Plain responses (logs, node proxy) stream back as they arrive."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiohttp import web

from aggapi.devcluster import kubeletpaths, proxy, rawhttp
from aggapi.devcluster.egress import EgressDialer, EgressError
from aggapi.devcluster.options import ADDRESS_TYPES
from aggapi.http.handlers import ResourceHandler
from aggapi.http.requestinfo import RequestInfo
from aggapi.machinery import apierrors

log = logging.getLogger(__name__)

POD_SUBRESOURCES = ("log", "exec", "attach", "portforward")
_DROP = frozenset({"authorization"})
_ERROR_BODY_LIMIT = 4096


def _unknown(message: str) -> apierrors.StatusError:
    """What kube-apiserver answers for an error that is not a Status (ErrorToAPIStatus): 500, no reason."""
    return apierrors.StatusError(500, "", message)


def _headers(request: web.Request) -> list[tuple[str, str]]:
    return [
        (k, v)
        for k, v in request.headers.items()
        if k.lower() not in proxy.HOP_BY_HOP
        and k.lower() not in _DROP
        and not k.lower().startswith("impersonate-")
    ]


class KubeletProxy:
    """Installs the subresource handlers on the pods and nodes ResourceHandlers."""

    def __init__(
        self,
        dialer: EgressDialer | None,
        address_types: Sequence[str] = ADDRESS_TYPES,
        request_timeout: float = proxy.REQUEST_TIMEOUT,
    ) -> None:
        self._dialer = dialer
        self._address_types = tuple(address_types)
        self._timeout = request_timeout
        self._nodes: ResourceHandler | None = None
        self._pods: ResourceHandler | None = None

    def install(self, pods: ResourceHandler, nodes: ResourceHandler) -> None:
        self._pods, self._nodes = pods, nodes
        for sub in POD_SUBRESOURCES:
            pods.subresources[sub] = self._pod
        nodes.subresources["proxy"] = self._node_proxy

    # ---- handlers --------------------------------------------------------------------------------

    async def _pod(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        assert self._pods is not None
        sub = info.subresource
        allowed = ("GET", "HEAD") if sub == "log" else ("GET", "POST")
        if request.method not in allowed:
            raise apierrors.method_not_allowed(request.method, f"pods/{sub}")
        pod = await self._pods.store.get(info.namespace, info.name)
        location = kubeletpaths.pod_location(pod, sub, request.query_string)
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        if not node:
            raise apierrors.bad_request(f"pod {info.name} does not have a host assigned")
        if sub != "log" and not proxy.is_upgrade(request):
            raise apierrors.bad_request("Upgrade request required")
        host, port = await self._endpoint(node, None)
        if sub == "log":
            return await self._plain(request, host, port, location, log_errors=True)
        return await self._upgrade(request, host, port, location)

    async def _node_proxy(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        name, port = kubeletpaths.split_node_id(info.name)
        host, port = await self._endpoint(name, port)
        target = kubeletpaths.node_proxy_target(request.raw_path)
        if proxy.is_upgrade(request):
            return await self._upgrade(request, host, port, target)
        return await self._plain(request, host, port, target, log_errors=False)

    # ---- routing ---------------------------------------------------------------------------------

    async def _endpoint(self, node_name: str, port: int | None) -> tuple[str, int]:
        assert self._nodes is not None
        node = await self._nodes.store.get("", node_name)  # a 404 Status when there is no such Node
        host, kubelet_port = kubeletpaths.node_endpoint(node, self._address_types)
        if self._dialer is None:
            raise apierrors.service_unavailable(
                f"no route to the kubelet of node {node_name}: the devcluster reaches kubelets only "
                "through an egress selector (--egress-selector-config-file with an HTTPConnect "
                "'cluster' selection), and none is configured"
            )
        return host, port or kubelet_port

    async def _dial(
        self, host: str, port: int, what: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        assert self._dialer is not None
        try:
            return await self._dialer.dial(host, port)
        except EgressError as exc:
            log.info("kubelet %s:%d: %s", host, port, exc)
            raise _unknown(f"{what}: {exc}") from None

    # ---- forwarding ------------------------------------------------------------------------------

    async def _plain(
        self, request: web.Request, host: str, port: int, target: str, *, log_errors: bool
    ) -> web.StreamResponse:
        url = f"https://{host}:{port}{target}"
        body = await request.read() if request.body_exists else b""
        reader, writer = await self._dial(host, port, f'{request.method.capitalize()} "{url}"')
        resp: web.StreamResponse | None = None
        try:
            headers = [*_headers(request), ("Connection", "close")]
            if body or request.method in ("POST", "PUT", "PATCH"):
                headers.append(("Content-Length", str(len(body))))
            writer.write(rawhttp.request_head(request.method, target, f"{host}:{port}", headers) + body)
            async with asyncio.timeout(self._timeout):
                await writer.drain()
                status, reason, up_headers = await rawhttp.read_head(reader)
                if log_errors and not 200 <= status < 300:
                    text = await rawhttp.read_body(reader, up_headers, _ERROR_BODY_LIMIT)
                    message = text.decode("utf-8", "replace").strip() or f"{status} {reason}"
                    raise apierrors.StatusError(status, "", message)
            resp = web.StreamResponse(status=status, reason=reason)
            for k, v in up_headers:
                if k.lower() not in proxy.HOP_BY_HOP or k.lower() == "content-length":
                    resp.headers.add(k, v)
            bodyless = request.method == "HEAD" or status in (204, 304) or 100 <= status < 200
            if "Content-Length" not in resp.headers and not bodyless:
                resp.enable_chunked_encoding()
            await resp.prepare(request)
            if not bodyless:
                async for chunk in rawhttp.iter_body(reader, up_headers):
                    await resp.write(chunk)
            await resp.write_eof()
            return resp
        except (
            OSError,
            ValueError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as exc:
            if resp is not None and resp.prepared:
                log.info("kubelet %s: stream ended: %s", url, exc or type(exc).__name__)
                return resp  # the kubelet went away mid-stream: the client sees the stream end
            raise _unknown(f'{request.method.capitalize()} "{url}": {exc or type(exc).__name__}') from None
        finally:
            await proxy.close_writer(writer)

    async def _upgrade(self, request: web.Request, host: str, port: int, target: str) -> web.StreamResponse:
        reader, writer = await self._dial(host, port, "error dialing backend")
        try:
            headers = [*_headers(request), ("Connection", "Upgrade")]
            headers += [("Upgrade", v) for v in request.headers.getall("Upgrade", [])]
            head = rawhttp.request_head(request.method, target, f"{host}:{port}", headers)
            return await proxy.exchange_upgrade(request, reader, writer, head)
        except (
            OSError,
            ValueError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as exc:
            raise _unknown(
                f"error proxying to the kubelet of {host}:{port}: {exc or type(exc).__name__}"
            ) from None
        finally:
            await proxy.close_writer(writer)
