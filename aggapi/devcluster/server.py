"""Assembling the devcluster: authentication (client certificates from its client CA, static tokens),
the policy authorizer, the built-in kinds on etcd, the reviews and the aggregator as the routes'
Delegate, serving TLS, and the background loops; then serving until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from aggapi.auth.authconfig import AuthConfig, RequestHeaderConfig, to_configmap
from aggapi.auth.authn import Chain, X509Authenticator
from aggapi.devcluster import bodies
from aggapi.devcluster.aggregator import Aggregator
from aggapi.devcluster.backends import FrontProxyCredentials
from aggapi.devcluster.bootstrap import Bootstrap, Published
from aggapi.devcluster.csr import install_approval
from aggapi.devcluster.egress import EgressDialer, kubelet_tls, load_egress_selector
from aggapi.devcluster.eviction import install_eviction
from aggapi.devcluster.gc import GarbageCollector, client_tls
from aggapi.devcluster.kinds import KINDS, find
from aggapi.devcluster.kubelet import KubeletProxy
from aggapi.devcluster.nodelifecycle import NodeLifecycle
from aggapi.devcluster.options import DevclusterOptions
from aggapi.devcluster.pki import FRONT_PROXY_CN, DevclusterPKI, ensure_pki
from aggapi.devcluster.policy import Policy, PolicyAuthorizer, StaticTokens, load_policy, parse_token_file
from aggapi.devcluster.reviews import Reviews
from aggapi.devcluster.stores import Stores
from aggapi.http.requestinfo import RequestInfo
from aggapi.metrics import Metrics
from aggapi.options import AuthnOptions, EtcdOptions, ServerOptions, ServingOptions
from aggapi.registry.store import Store
from aggapi.routes import Delegate
from aggapi.server import RUNTIME, Background, build_app
from aggapi.servingtls import DynamicServingTLS

log = logging.getLogger(__name__)


class Delegates:
    """Several Delegates as one: the first that serves a group-version handles it."""

    def __init__(self, parts: Sequence[Delegate]) -> None:
        self._parts = list(parts)

    def serves(self, group: str, version: str) -> bool:
        return any(p.serves(group, version) for p in self._parts)

    async def handle(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        for p in self._parts:
            if p.serves(info.group, info.version):
                return await p.handle(request, info)
        raise web.HTTPNotFound()

    def discovery(self, aggregated_version: str) -> list[dict[str, Any]]:
        return [e for p in self._parts for e in p.discovery(aggregated_version)]

    def openapi_v3_paths(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self._parts:
            out.update(p.openapi_v3_paths())
        return out


def published_auth(client_ca: bytes, front_proxy_ca: bytes) -> dict[str, str]:
    front = RequestHeaderConfig(
        front_proxy_ca,
        allowed_names=(FRONT_PROXY_CN,),
        username_headers=("X-Remote-User",),
        uid_headers=("X-Remote-Uid",),
        group_headers=("X-Remote-Group",),
        extra_prefixes=("X-Remote-Extra-",),
    )
    return to_configmap(AuthConfig(client_ca, front))


@dataclass(frozen=True, slots=True)
class Loaded:
    """What is read from disk at start (blocking file I/O, kept out of the event loop's way)."""

    pki: DevclusterPKI
    tokens: StaticTokens
    policy: Policy
    client_ca: bytes
    front_proxy_ca: bytes
    kubelet_dialer: EgressDialer | None


def load(opts: DevclusterOptions) -> Loaded:
    pki = ensure_pki(Path(opts.pki_dir), ips=sorted({"127.0.0.1", opts.bind_address}))
    tokens = parse_token_file(Path(opts.token_auth_file).read_text()) if opts.token_auth_file else {}
    egress = load_egress_selector(opts.egress_selector_config_file)
    dialer = None
    if egress is not None:
        if not opts.kubelet_certificate_authority:
            log.warning("no --kubelet-certificate-authority: kubelets' serving certificates are not verified")
        kubelet = kubelet_tls(
            opts.kubelet_client_certificate, opts.kubelet_client_key, opts.kubelet_certificate_authority
        )
        dialer = EgressDialer(egress, kubelet)
        log.info("kubelet traffic goes through the HTTP CONNECT egress at %s", egress.where)
    else:
        log.info("no egress selector for cluster traffic: kubelet requests will be answered 503")
    return Loaded(
        pki,
        StaticTokens(tokens),
        load_policy(opts.authorization_policy_file),
        pki.client_ca.read_bytes(),
        pki.front_proxy_ca.read_bytes(),
        dialer,
    )


async def run(opts: DevclusterOptions, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGINT/SIGTERM when no event is given)."""
    cfg = load(opts)
    pki, tokens = cfg.pki, cfg.tokens
    authorizer = PolicyAuthorizer(cfg.policy)
    client_auth = AuthConfig(cfg.client_ca)
    stores = Stores()
    aggregator = Aggregator(
        stores,
        FrontProxyCredentials(str(pki.front_proxy_cert), str(pki.front_proxy_key)),
        check_interval=opts.apiservice_check_interval,
    )
    bootstrap = Bootstrap(
        stores,
        Published(published_auth(cfg.client_ca, cfg.front_proxy_ca), opts.bind_address, opts.secure_port),
    )
    lifecycle = NodeLifecycle(
        stores, grace_period=opts.node_monitor_grace_period, period=opts.node_monitor_period
    )
    host = f"[{opts.bind_address}]" if ":" in opts.bind_address else opts.bind_address
    # A client of its own API, as kube's GC is: owners in aggregated groups are found through aggregation.
    gc = GarbageCollector(stores, f"https://{host}:{opts.secure_port}", client_tls(pki))
    metrics = Metrics()
    tls = DynamicServingTLS(str(pki.serving_cert), str(pki.serving_key), lambda: client_auth, metrics)
    background: list[Background] = [
        ("serving-cert-reload", tls.run),
        ("devcluster-bootstrap", bootstrap.run),
        ("apiservice-informer", aggregator.run_informer),
        ("apiservice-availability", aggregator.run_checks),
        ("node-lifecycle", lifecycle.run),
        ("garbage-collector", gc.run),
    ]
    server_opts = ServerOptions(
        serving=ServingOptions(opts.bind_address, opts.secure_port),
        etcd=EtcdOptions(opts.etcd_servers, opts.etcd_prefix),
        authn=AuthnOptions(always_allow_paths=("/healthz", "/readyz", "/livez")),
    )
    app = build_app(
        server_opts,
        authenticator=Chain([X509Authenticator(lambda: client_auth), tokens]),
        authorizer=authorizer,
        metrics=metrics,
        kinds=KINDS,
        background=background,
        delegate=Delegates([Reviews(tokens.lookup, authorizer), aggregator]),
    )
    stores.app = app

    def store_for(group: str, version: str, resource: str) -> Store | None:
        h = app[RUNTIME].handlers.get((group, version, resource))
        return h.store if h is not None else None

    # Innermost, after authentication and authorization, like the body decoding it stands in for.
    app.middlewares.append(bodies.middleware(store_for))
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    csr = find("certificates.k8s.io", "certificatesigningrequests")
    install_approval(app[RUNTIME].handlers[(csr.group, csr.version, csr.resource)])
    handlers = app[RUNTIME].handlers
    KubeletProxy(cfg.kubelet_dialer, opts.kubelet_preferred_address_types).install(
        handlers[("", "v1", "pods")], handlers[("", "v1", "nodes")]
    )
    install_eviction(handlers[("", "v1", "pods")], handlers[("policy", "v1", "poddisruptionbudgets")])
    site = web.TCPSite(runner, opts.bind_address, opts.secure_port, ssl_context=tls.base, backlog=1024)
    await site.start()
    log.info("devcluster serving on https://%s:%d", opts.bind_address, opts.secure_port)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("devcluster shutting down")
        await runner.cleanup()
