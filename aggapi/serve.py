"""`aggapi serve`: assemble authentication, authorization, serving TLS and the app from options."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path
from typing import Any

from aiohttp import web

from aggapi.auth.authconfig import AuthConfig, RequestHeaderConfig
from aggapi.auth.authn import Chain, RequestHeaderAuthenticator, TokenAuthenticator, X509Authenticator
from aggapi.auth.authz import AuthenticatedOnly, Authorizer, DelegatingAuthorizer
from aggapi.auth.kube import AuthConfigSource, KubeAccessReviewer, KubeTokenReviewer, api_client
from aggapi.controllers.manager import build_controllers
from aggapi.controllers.nodes import NodeDirectory
from aggapi.edge_api.assemble import build_edge
from aggapi.metrics import Metrics
from aggapi.options import AuthnOptions, ServerOptions
from aggapi.server import Background, build_app
from aggapi.servingtls import DynamicServingTLS

log = logging.getLogger(__name__)


def serving_files(opts: ServerOptions) -> tuple[str, str]:
    s = opts.serving
    if s.tls_cert_file:
        return s.tls_cert_file, s.tls_private_key_file
    from certs.files import ensure_self_signed_serving

    names = ["localhost", socket.gethostname()]
    cert, key = ensure_self_signed_serving(
        Path(s.cert_dir), common_name="aggapi", dns_names=names, ips=["127.0.0.1", "::1"]
    )
    return str(cert), str(key)


def flag_overrides(a: AuthnOptions) -> AuthConfig:
    front = None
    if a.requestheader_client_ca_file:
        front = RequestHeaderConfig(
            Path(a.requestheader_client_ca_file).read_bytes(),
            a.requestheader_allowed_names,
            a.requestheader_username_headers,
            (),
            a.requestheader_group_headers,
            a.requestheader_extra_headers_prefix,
        )
    client_ca = Path(a.client_ca_file).read_bytes() if a.client_ca_file else b""
    return AuthConfig(client_ca, front)


async def serve(opts: ServerOptions) -> None:
    a = opts.authn
    authn_api = await api_client(a.authentication_kubeconfig) if a.delegated_authn else None
    authz_api = await api_client(a.authorization_kubeconfig) if a.delegated_authz else None
    source = AuthConfigSource(authn_api, flag_overrides(a))
    if authn_api is not None:
        await _initial_load(source)
    authenticators: list[Any] = [RequestHeaderAuthenticator(source), X509Authenticator(source)]
    if authn_api is not None:
        authenticators.append(TokenAuthenticator(KubeTokenReviewer(authn_api), ttl=a.token_cache_ttl))
    authorizer: Authorizer
    if authz_api is not None:
        authorizer = DelegatingAuthorizer(
            KubeAccessReviewer(authz_api),
            privileged_groups=a.always_allow_groups,
            allowed_ttl=a.authz_allowed_ttl,
            denied_ttl=a.authz_denied_ttl,
        )
    else:
        log.warning("authorization is not delegated: every authenticated user may do everything")
        authorizer = AuthenticatedOnly()
    if not source().trust_pem.strip() and authn_api is None:
        log.warning("no client CA configured: every request except health checks will be refused (401)")
    metrics = Metrics()
    cert, key = serving_files(opts)
    tls = DynamicServingTLS(cert, key, source, metrics)

    interval = opts.serving.cert_reload_interval

    async def reload_ca_files() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                source.set_overrides(flag_overrides(a))
            except (OSError, ValueError) as exc:  # mid-rotation: keep the CAs we have
                log.warning("client CA files not reloaded: %s", exc)

    background: list[Background] = [
        ("serving-cert-reload", lambda: tls.run(interval)),
        ("client-ca-reload", reload_ca_files),
    ]
    if authn_api is not None:
        background.append(("extension-apiserver-authentication", source.run))
    edge = await build_edge(opts, cert, key)
    background += edge.background
    controllers = build_controllers(
        opts.controllers,
        edge.api,
        edge.nodes or NodeDirectory(None),
        edge.tunnel,
        metrics,
        verdicts=edge.health.verdict_of if edge.health is not None else None,
    )
    background += controllers.background
    app = build_app(
        opts,
        authenticator=Chain(authenticators),
        authorizer=authorizer,
        metrics=metrics,
        background=background,
        extensions=edge.extensions.merged(controllers.extensions),
    )
    # handler_cancellation: a client that goes away cancels its handler, so idle watches are freed.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner, opts.serving.bind_address, opts.serving.secure_port, ssl_context=tls.base, backlog=1024
    )
    await site.start()
    log.info("serving securely on %s:%d", opts.serving.bind_address, opts.serving.secure_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()
        await edge.close()
        for api in {id(x): x for x in (authn_api, authz_api) if x is not None}.values():
            await api.close()


async def _initial_load(source: AuthConfigSource, attempts: int = 30) -> None:
    """Start with the published CAs when kube-apiserver answers; keep trying in the background if not."""
    for _ in range(attempts):
        try:
            await source.load()
            return
        except Exception as exc:  # any failure to reach kube-apiserver: log and retry
            log.warning("reading extension-apiserver-authentication: %s", exc)
            await asyncio.sleep(1)
