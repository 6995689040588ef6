"""One aggregated backend per APIService, as kube-aggregator builds it: the Service's endpoints
(`--enable-aggregator-routing`: Endpoints/EndpointSlices, not a ClusterIP), TLS verified against
`spec.caBundle` for `<service>.<namespace>.svc`, the front-proxy client certificate, and the
X-Remote-* identity headers. Also the availability check and the discovery download."""

from __future__ import annotations

import base64
import binascii
import contextlib
import random
import ssl
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict

from aggapi.auth.authn import UserInfo
from aggapi.devcluster.stores import Stores
from aggapi.machinery import apierrors
from aggapi.machinery.labels import parse_label_selector
from aggapi.storage.interface import ListOptions, Predicate

AGGREGATOR = UserInfo("system:kube-aggregator", ("system:masters",))
DISCOVERY_TIMEOUT = 5.0  # kube-aggregator's limit for discovery and availability checks
CONNECT_TIMEOUT = 5.0
ACCEPT_V2 = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
)
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$&'*+-.^_`|~")


@dataclass(frozen=True, slots=True)
class ServiceRef:
    namespace: str
    name: str
    port: int = 443


@dataclass(frozen=True, slots=True)
class APIServiceSpec:
    name: str
    group: str
    version: str
    service: ServiceRef | None
    ca_bundle: str  # base64 of PEM, as in the object
    group_priority: int = 0
    version_priority: int = 0

    @staticmethod
    def parse(obj: Mapping[str, Any]) -> APIServiceSpec:
        spec = obj.get("spec") or {}
        svc = spec.get("service")
        ref = None
        if isinstance(svc, Mapping) and svc.get("name"):
            ref = ServiceRef(str(svc.get("namespace", "")), str(svc["name"]), int(svc.get("port") or 443))
        return APIServiceSpec(
            str(obj["metadata"]["name"]),
            str(spec.get("group", "")),
            str(spec.get("version", "")),
            ref,
            str(spec.get("caBundle") or ""),
            int(spec.get("groupPriorityMinimum") or 0),
            int(spec.get("versionPriority") or 0),
        )

    @property
    def server_name(self) -> str:
        assert self.service is not None
        return f"{self.service.name}.{self.service.namespace}.svc"


@dataclass(frozen=True, slots=True)
class FrontProxyCredentials:
    cert_file: str
    key_file: str


class Unresolved(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# ---- identity headers ------------------------------------------------------------------------------


def escape_header_key(key: str) -> str:
    """Percent-encode what may not appear in a header name (and '%' itself), as kube does for extras."""
    return "".join(c if c in _TOKEN_CHARS else "".join(f"%{b:02X}" for b in c.encode()) for c in key)


def identity_headers(user: UserInfo) -> CIMultiDict[str]:
    h: CIMultiDict[str] = CIMultiDict()
    h["X-Remote-User"] = user.name
    if user.uid:
        h["X-Remote-Uid"] = user.uid
    for g in user.groups:
        h.add("X-Remote-Group", g)
    for k, values in user.extra.items():
        for v in values:
            h.add("X-Remote-Extra-" + escape_header_key(k), v)
    return h


# ---- endpoints ------------------------------------------------------------------------------------


def _port_number(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


async def resolve(
    stores: Stores, ref: ServiceRef, choose: Callable[[list[Any]], Any] = random.choice
) -> tuple[str, int]:
    """host:port of one ready endpoint of the Service's port `ref.port`, or Unresolved with the
    availability controller's reason."""
    where = f'service/{ref.name} in "{ref.namespace}"'  # Go's %q, as kube words these
    try:
        svc = await stores("", "services").get(ref.namespace, ref.name, resource_version="0")
    except apierrors.StatusError as exc:
        if exc.code == 404:
            raise Unresolved("ServiceNotFound", f"{where} is not present") from None
        raise Unresolved("ServiceAccessError", f"{where} cannot be checked due to: {exc}") from None
    port_name: str | None = None
    for p in (svc.get("spec") or {}).get("ports") or []:
        if _port_number(p.get("port")) == ref.port:
            port_name = str(p.get("name") or "")
            break
    if port_name is None:
        raise Unresolved("ServicePortError", f"{where} is not listening on port {ref.port}")
    selector = parse_label_selector(f"{SERVICE_NAME_LABEL}={ref.name}")
    slices = await stores("discovery.k8s.io", "endpointslices").list(
        ref.namespace, ListOptions(resource_version="0", predicate=Predicate(label=selector))
    )
    found: list[tuple[str, int]] = []
    for s in slices.items:
        ports = [
            _port_number(p.get("port")) for p in s.get("ports") or [] if str(p.get("name") or "") == port_name
        ]
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            found += [(str(a), n) for a in ep.get("addresses") or [] for n in ports if n]
    if not slices.items:
        try:
            eps = await stores("", "endpoints").get(ref.namespace, ref.name, resource_version="0")
        except apierrors.StatusError:
            raise Unresolved("EndpointsNotFound", f"cannot find endpointslices for {where}") from None
        for subset in eps.get("subsets") or []:
            ports = [
                _port_number(p.get("port"))
                for p in subset.get("ports") or []
                if str(p.get("name") or "") == port_name
            ]
            found += [(str(a.get("ip")), n) for a in subset.get("addresses") or [] for n in ports if n]
    if not found:
        raise Unresolved(
            "MissingEndpoints", f'endpointslices for {where} have no addresses with port name "{port_name}"'
        )
    host, port = choose(found)
    return host, port


# ---- TLS and sessions -------------------------------------------------------------------------------


def client_ssl(spec: APIServiceSpec, creds: FrontProxyCredentials) -> ssl.SSLContext:
    """Verification is never skipped: without a caBundle nothing is trusted and every dial fails."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and hostname checking
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if spec.ca_bundle:
        try:
            pem = base64.b64decode(spec.ca_bundle, validate=True).decode()
            ctx.load_verify_locations(cadata=pem)
        except (binascii.Error, UnicodeDecodeError, ssl.SSLError, ValueError) as exc:
            raise ValueError(f"spec.caBundle is not base64 PEM certificates: {exc}") from None
    ctx.load_cert_chain(creds.cert_file, creds.key_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class Backend:
    """Connection state for one APIService: its TLS context and pooled HTTP client."""

    def __init__(self, spec: APIServiceSpec, creds: FrontProxyCredentials) -> None:
        self.spec = spec
        self.ssl: ssl.SSLContext | None = None
        self.ssl_error = ""
        try:
            self.ssl = client_ssl(spec, creds)
        except (ValueError, OSError, ssl.SSLError) as exc:
            self.ssl_error = str(exc)
        self._session: aiohttp.ClientSession | None = None
        # Discovery of this group-version as last downloaded, and whether the last try failed.
        self.discovery: dict[str, Any] | None = None
        self.etag = ""
        self.stale = True
        self.openapi_url = ""

    def session(self) -> aiohttp.ClientSession:
        if self.ssl is None:
            raise RuntimeError(self.ssl_error)
        if self._session is None or self._session.closed:
            # auto_decompress off: bytes pass through with their Content-Encoding untouched.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl, limit=256, enable_cleanup_closed=True),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(
        self, host: str, port: int, path: str, headers: Mapping[str, str], user: UserInfo = AGGREGATOR
    ) -> tuple[int, CIMultiDict[str], bytes]:
        """A short request as the aggregator itself (availability and discovery), within 5 s."""
        hdrs = identity_headers(user)
        hdrs.update(headers)
        timeout = aiohttp.ClientTimeout(total=DISCOVERY_TIMEOUT, sock_connect=CONNECT_TIMEOUT)
        async with self.session().get(
            f"https://{host}:{port}{path}",
            headers=hdrs,
            timeout=timeout,
            allow_redirects=False,
            server_hostname=self.spec.server_name,
        ) as r:
            return r.status, CIMultiDict(r.headers), await r.read()


@dataclass(frozen=True, slots=True)
class Availability:
    status: str  # "True" | "False"
    reason: str
    message: str
    endpoint: tuple[str, int] | None = None


def _failed(url: str, detail: str) -> Availability:
    return Availability("False", "FailedDiscoveryCheck", f"failing or missing response from {url}: {detail}")


async def check_available(backend: Backend, stores: Stores) -> Availability:
    """The Available condition as kube's remote availability controller computes it: the Service, a
    ready endpoint for its port, and a 2xx for GET /apis/<group>/<version> within 5 s."""
    spec = backend.spec
    assert spec.service is not None
    try:
        host, port = await resolve(stores, spec.service)
    except Unresolved as exc:
        return Availability("False", exc.reason, exc.message)
    path = f"/apis/{spec.group}/{spec.version}"
    url = f"https://{host}:{port}{path}"
    if backend.ssl is None:
        return _failed(url, backend.ssl_error)
    try:
        status, _, _ = await backend.get(host, port, path, {})
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return _failed(url, _describe(exc))
    if not 200 <= status < 300:
        return _failed(url, f"bad status from {url}: {status}")
    return Availability("True", "Passed", "all checks passed", (host, port))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "Client.Timeout exceeded while awaiting headers"
    with contextlib.suppress(AttributeError):
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return f"tls: failed to verify certificate: {exc.certificate_error}"
    return str(exc) or type(exc).__name__
