"""kube-apiserver's egress selector for cluster traffic (`--egress-selector-config-file`): the
`apiserver.k8s.io` EgressSelectorConfiguration's `cluster` selection, reached with HTTP CONNECT over a
unix socket or TCP (optionally TLS with a client certificate), then TLS to the kubelet.

The devcluster has no other route to nodes: `Direct` and `GRPC` selections are refused when the file
is read, and without a file every kubelet request is answered 503."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

GROUP = "apiserver.k8s.io"
VERSIONS = ("v1beta1", "v1alpha1", "v1")
KIND = "EgressSelectorConfiguration"
CLUSTER = "cluster"
_HEAD_LIMIT = 16 * 1024
_BODY_LIMIT = 4 * 1024


class EgressError(Exception):
    """A dial through the egress failed; the message reads as kube-apiserver's."""


@dataclass(frozen=True, slots=True)
class EgressTransport:
    """Where the HTTP CONNECT proxy listens: a unix socket, or a TCP URL (https: with tlsConfig)."""

    uds_name: str = ""
    url: str = ""
    ca_bundle: str = ""
    client_cert: str = ""
    client_key: str = ""

    @property
    def where(self) -> str:
        """How kube names the proxy in errors: the socket path, or host:port."""
        return self.uds_name or (urlsplit(self.url).netloc if self.url else "")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping")
    return value


def parse_egress_selector(text: str) -> EgressTransport | None:
    """The `cluster` selection's transport; None when the file selects nothing for cluster traffic."""
    doc = _mapping(yaml.safe_load(text), "the egress selector configuration")
    api_version, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
    group, _, version = api_version.partition("/")
    if group != GROUP or version not in VERSIONS or kind != KIND:
        raise ValueError(
            f"want apiVersion {GROUP}/v1beta1 and kind {KIND}, got apiVersion {api_version!r} kind {kind!r}"
        )
    selections = doc.get("egressSelections") or []
    if not isinstance(selections, list):
        raise ValueError("egressSelections must be a list")
    for i, raw in enumerate(selections):
        sel = _mapping(raw, f"egressSelections[{i}]")
        if sel.get("name") != CLUSTER:
            continue  # controlplane/master and etcd: the devcluster has no such traffic to route
        conn = _mapping(sel.get("connection"), f"egressSelections[{i}].connection")
        protocol = conn.get("proxyProtocol")
        if protocol != "HTTPConnect":
            raise ValueError(
                f"egressSelections[{i}] (cluster): proxyProtocol {protocol!r} is not supported; the "
                "devcluster reaches kubelets only through an HTTPConnect egress (no Direct route, no GRPC)"
            )
        transport = _mapping(conn.get("transport"), f"egressSelections[{i}].connection.transport")
        uds = _mapping(transport.get("uds"), "transport.uds")
        tcp = _mapping(transport.get("tcp"), "transport.tcp")
        if bool(uds) == bool(tcp):
            raise ValueError(f"egressSelections[{i}] (cluster): set one of transport.uds, transport.tcp")
        if uds:
            name = str(uds.get("udsName") or "")
            if not name:
                raise ValueError("transport.uds.udsName is required")
            return EgressTransport(uds_name=name)
        url = str(tcp.get("url") or "")
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https") or not urlsplit(url).port:
            raise ValueError(f"transport.tcp.url {url!r}: want http(s)://host:port")
        tls = _mapping(tcp.get("tlsConfig"), "transport.tcp.tlsConfig")
        if scheme == "https" and not tls.get("caBundle"):
            raise ValueError("transport.tcp.tlsConfig.caBundle is required for an https url")
        return EgressTransport(
            url=url,
            ca_bundle=str(tls.get("caBundle") or ""),
            client_cert=str(tls.get("clientCert") or ""),
            client_key=str(tls.get("clientKey") or ""),
        )
    return None


def load_egress_selector(path: str) -> EgressTransport | None:
    return parse_egress_selector(Path(path).read_text()) if path else None


def kubelet_tls(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """kube-apiserver's kubelet client: its client certificate; the kubelet's serving certificate is
    verified against --kubelet-certificate-authority (kube skips verification without one)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca:
        ctx.load_verify_locations(cafile=ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class EgressDialer:
    """`dial(host, port)`: a TLS connection to a kubelet, through HTTP CONNECT on the egress."""

    def __init__(self, transport: EgressTransport, kubelet: ssl.SSLContext, timeout: float = 10.0) -> None:
        self.transport = transport
        self._kubelet = kubelet
        self._timeout = timeout
        self._proxy_tls: ssl.SSLContext | None = None
        if transport.url.startswith("https:"):
            ctx = ssl.create_default_context(cafile=transport.ca_bundle)
            if transport.client_cert:
                ctx.load_cert_chain(transport.client_cert, transport.client_key)
            self._proxy_tls = ctx

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        t = self.transport
        if t.uds_name:
            return await asyncio.open_unix_connection(t.uds_name, limit=_HEAD_LIMIT)
        u = urlsplit(t.url)
        return await asyncio.open_connection(u.hostname, u.port, ssl=self._proxy_tls, limit=_HEAD_LIMIT)

    async def dial(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        proxy = self.transport.where
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self._timeout):
                reader, writer = await self._open()
                writer.write(f"CONNECT {addr} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                parts = status_line.split(" ", 2)
                code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
                if code != 200:
                    detail = await _error_body(reader)
                    status = " ".join(parts[1:]) if len(parts) > 1 else status_line
                    raise EgressError(
                        f"proxy error from {proxy} while dialing {addr}, code {code}: {status}"
                        + (f": {detail}" if detail else "")
                    )
                try:
                    await writer.start_tls(self._kubelet, server_hostname=host)
                except TypeError:
                    # CPython 3.11: a failed handshake inside a TLS connection (the https proxy) breaks in
                    # asyncio's own cleanup (_SSLProtocolTransport._force_close; fixed in 3.12).
                    raise ssl.SSLError("the kubelet's certificate or TLS handshake was refused") from None
            return reader, writer
        except EgressError:
            await _close(writer)
            raise
        except TimeoutError:
            await _close(writer)
            raise EgressError(f"dialing {addr} via proxy {proxy}: no answer in {self._timeout:g}s") from None
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            await _close(writer)
            what = "TLS handshake with the kubelet" if isinstance(exc, ssl.SSLError) else "dialing"
            detail = str(exc) or type(exc).__name__
            raise EgressError(f"{what} {addr} via proxy {proxy} failed: {detail}") from None


async def _error_body(reader: asyncio.StreamReader) -> str:
    with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
        async with asyncio.timeout(2):
            data = await reader.read(_BODY_LIMIT)
            return data.decode("utf-8", "replace").strip().replace("\n", " ")
    return ""


async def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    writer.close()
    # TypeError: the CPython 3.11 TLS-in-TLS cleanup bug noted in EgressDialer.dial.
    with contextlib.suppress(OSError, TimeoutError, ssl.SSLError, TypeError):
        async with asyncio.timeout(1):
            await writer.wait_closed()
