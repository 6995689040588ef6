"""`aggapi-edge shadow`: flags → ShadowConfig → Shadow.run() (see docs/shadow.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from edge.flags import duration
from edge.shadow.config import DEFAULT_COMPONENTS, ShadowConfig
from edge.shadow.filters.config import (
    DEFAULT_MASTER_HOST,
    DEFAULT_MASTER_PORT,
    MASTER_SERVICE,
    SERVICE_TOPOLOGY,
    FiltersConfig,
)

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "/var/lib/aggapi-edge/shadow"


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"want true or false, not {text!r}")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "shadow",
        help="caching proxy to kube-apiserver; serves from its disk cache when the cloud is unreachable",
        description="shadow-apiserver: kubelet, kube-proxy, coredns and pods reach kube-apiserver via it.",
    )
    p.add_argument("--node-name", required=True)
    p.add_argument(
        "--server", action="append", required=True, help="kube-apiserver https://host:port (repeatable)"
    )
    p.add_argument("--server-ca-file", required=True, type=Path, help="CA that signed kube-apiserver's cert")
    p.add_argument(
        "--node-cert-file",
        required=True,
        type=Path,
        help="node client cert, e.g. /var/lib/kubelet/pki/kubelet-client-current.pem (re-read on change)",
    )
    p.add_argument("--node-key-file", type=Path, help="its key (default: --node-cert-file, a combined PEM)")
    p.add_argument("--cache-dir", type=Path, default=Path(DEFAULT_CACHE_DIR))
    add_arguments(p)
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=run)


def add_arguments(p: argparse._ActionsContainer, prefix: str = "") -> None:
    """The flags besides the identity ones above (node, kube-apiserver, node cert, cache dir). `aggapi-edge
    all` adds them with prefix "shadow-" (`--shadow-port`, dest `shadow_port`)."""
    p.add_argument(f"--{prefix}bind-address", default="127.0.0.1")
    p.add_argument(f"--{prefix}port", type=int, default=10261, help="plain HTTP port (default 10261)")
    p.add_argument(
        f"--{prefix}secure-port", type=int, default=10268, help="HTTPS port (default 10268; 0 disables)"
    )
    p.add_argument(f"--{prefix}tls-cert-file", type=Path, help="serving cert of --secure-port")
    p.add_argument(f"--{prefix}tls-private-key-file", type=Path)
    p.add_argument(
        f"--{prefix}health-port", type=int, default=10267, help="/healthz /readyz /metrics (0 disables)"
    )
    p.add_argument(
        f"--{prefix}cache-agents",
        default=",".join(DEFAULT_COMPONENTS),
        help="components (User-Agent first token) whose reads are cached; '*' = all (default %(default)s)",
    )
    p.add_argument(
        f"--{prefix}probe-period", type=duration, default=10.0, help="cloud health probe period (default 10s)"
    )
    p.add_argument(f"--{prefix}probe-timeout", type=duration, default=2.0, help="default 2s")
    p.add_argument(
        f"--{prefix}unhealthy-after", type=int, default=3, help="failed probes in a row (default 3)"
    )
    p.add_argument(f"--{prefix}healthy-after", type=int, default=2, help="good probes in a row (default 2)")
    p.add_argument(
        f"--{prefix}max-requests-inflight", type=int, default=250, help="non-watch requests; 0 = no limit"
    )
    p.add_argument(
        f"--{prefix}request-timeout", type=duration, default=60.0, help="one upstream request (default 60s)"
    )
    p.add_argument(
        f"--{prefix}connect-timeout",
        type=duration,
        default=3.0,
        help="reaching one kube-apiserver (TCP + TLS); then the next --server is tried and, when none "
        "answers, a get/list is answered from the cache (default 3s)",
    )
    p.add_argument(
        f"--{prefix}bookmark-interval",
        type=duration,
        default=30.0,
        help="offline watch bookmarks (default 30s)",
    )
    p.add_argument(
        f"--{prefix}cert-check-interval",
        type=duration,
        default=10.0,
        help="node cert file check (default 10s)",
    )
    p.add_argument(
        f"--{prefix}cache-fsync", type=_bool, default=True, help="fsync cache files (default true)"
    )
    p.add_argument(
        f"--{prefix}filters",
        default=f"{SERVICE_TOPOLOGY},{MASTER_SERVICE}",
        help="object filters to run, comma-separated; '--filters=' runs none (default %(default)s)",
    )
    p.add_argument(
        f"--{prefix}master-service-host",
        default=DEFAULT_MASTER_HOST,
        help="masterservice: the shadow's IP address as pods reach it (default %(default)s)",
    )
    p.add_argument(
        f"--{prefix}master-service-port",
        type=int,
        help="masterservice: the port pods use (default: --secure-port, 10268)",
    )
    p.add_argument(
        f"--{prefix}servicetopology-agents",
        default="kube-proxy,coredns",
        help="components whose EndpointSlices/Endpoints are filtered; '*' = all (default %(default)s)",
    )
    p.add_argument(
        f"--{prefix}masterservice-agents",
        default="kubelet",
        help="components that get the rewritten default/kubernetes Service (default %(default)s)",
    )
    p.add_argument(
        f"--{prefix}topology-zone-is-nodepool",
        type=_bool,
        default=True,
        help="the topologyKeys value kubernetes.io/zone means the NodePool, as in OpenYurt (default true)",
    )
    p.add_argument(
        f"--{prefix}secure-bind-address",
        default="",
        help="where the HTTPS port listens (default: the --master-service-host when the masterservice "
        "filter is on and --bind-address is 127.0.0.1, else --bind-address); see docs/shadow.md",
    )


def config_from(args: argparse.Namespace) -> ShadowConfig:
    return ShadowConfig(
        node_name=args.node_name,
        servers=tuple(args.server),
        ca_file=args.server_ca_file,
        cert_file=args.node_cert_file,
        key_file=args.node_key_file or args.node_cert_file,
        cache_dir=args.cache_dir,
        bind_address=args.bind_address,
        port=args.port,
        secure_port=args.secure_port,
        tls_cert_file=args.tls_cert_file,
        tls_private_key_file=args.tls_private_key_file,
        health_port=args.health_port,
        components=tuple(c.strip() for c in args.cache_agents.split(",") if c.strip()),
        probe_period=args.probe_period,
        probe_timeout=args.probe_timeout,
        unhealthy_after=args.unhealthy_after,
        healthy_after=args.healthy_after,
        max_requests_inflight=args.max_requests_inflight,
        request_timeout=args.request_timeout,
        connect_timeout=args.connect_timeout,
        bookmark_interval=args.bookmark_interval,
        cert_check_interval=args.cert_check_interval,
        fsync=args.cache_fsync,
        filters=filters_from(args),
        secure_bind_address=args.secure_bind_address,
    )


def _names(text: str) -> frozenset[str]:
    return frozenset(n.strip() for n in text.split(",") if n.strip())


def filters_from(args: argparse.Namespace) -> FiltersConfig:
    port = args.master_service_port
    if port is None:
        port = args.secure_port or DEFAULT_MASTER_PORT  # pods reach the shadow's HTTPS listener
    return FiltersConfig(
        node_name=args.node_name,
        enabled=_names(args.filters),
        servicetopology_components=_names(args.servicetopology_agents),
        masterservice_components=_names(args.masterservice_agents),
        master_host=args.master_service_host,
        master_port=port,
        zone_key_is_nodepool=args.topology_zone_is_nodepool,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cfg = config_from(args)
    errors = cfg.validate()
    if errors:
        for e in errors:
            log.error("shadow: %s", e)
        return 2
    try:
        asyncio.run(_serve(cfg))
    except OSError as e:  # a port is taken, or the cache dir is unusable
        log.error("shadow: %s", e)
        return 1
    return 0


async def _serve(cfg: ShadowConfig) -> None:
    from edge.shadow.server import Shadow

    shadow = Shadow(cfg)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(shadow.run(), name="shadow")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
