"""`aggapi-edge health-agent`: flags → HealthConfig → HealthAgent.run()."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from edge.health.config import DEFAULT_KUBELET_PORT, DEFAULT_PEER_PORT, HealthConfig, parse_peers

if TYPE_CHECKING:
    from edge.health.agent import HealthAgent

log = logging.getLogger(__name__)

DEFAULT_METRICS_BIND_ADDRESS = "127.0.0.1:10269"  # next to the shadow's 10267/10268


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "health-agent",
        help="probe pool peers and vote on their health",
        description="Probe pool peers (SWIM-style, mTLS with node certs) and post health votes to aggapi.",
    )
    p.add_argument("--node-name", required=True)
    p.add_argument("--address", required=True, help="this node's address; the peer endpoint listens here")
    p.add_argument("--cert", required=True, type=Path, help="CN=system:node:<node>, O=system:nodes")
    p.add_argument("--key", required=True, type=Path)
    p.add_argument("--ca", required=True, type=Path, help="the node CA (peers are verified against it)")
    p.add_argument(
        "--api-server",
        default="",
        help="kube-apiserver URL: pool members from this node's NodePool topology (replacing --peers and "
        "--peers-file), and the default --vote-url",
    )
    p.add_argument("--state-dir", type=Path, help="keep unsent votes here across restarts")
    add_arguments(p)
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=run)


def add_arguments(p: argparse._ActionsContainer, prefix: str = "") -> None:
    """The flags besides the identity ones above (node, address, cert, CA, --api-server, --state-dir).
    `aggapi-edge all` adds them with prefix "health-" (`--health-period`, dest `health_period`)."""
    p.add_argument(
        f"--{prefix}serving-cert",
        type=Path,
        help="certificate of the peer endpoint when --cert is client-only (e.g. the kubelet's serving "
        "certificate, CN=system:node:<node>); default --cert",
    )
    p.add_argument(f"--{prefix}serving-key", type=Path, help="its key (default: --serving-cert)")
    p.add_argument(f"--{prefix}peers", default="", help="pool members name=addr,... (this node is ignored)")
    p.add_argument(
        f"--{prefix}peers-file", type=Path, help="pool members, name=addr per line; re-read when rewritten"
    )
    p.add_argument(
        f"--{prefix}members-refresh", type=float, default=60.0, help="seconds between membership reads"
    )
    p.add_argument(
        f"--{prefix}vote-url",
        default="",
        help="https://.../edgenodes/{target}/health ('' = from --api-server, or no posting)",
    )
    p.add_argument(f"--{prefix}vote-ca", type=Path, help="CA of the vote server (default --ca)")
    p.add_argument(f"--{prefix}peer-port", type=int, default=DEFAULT_PEER_PORT)
    p.add_argument(f"--{prefix}kubelet-port", type=int, default=DEFAULT_KUBELET_PORT)
    p.add_argument(f"--{prefix}period", type=float, default=10.0, help="seconds between probe periods")
    p.add_argument(f"--{prefix}probe-timeout", type=float, default=2.0, help="seconds")
    p.add_argument(f"--{prefix}probes-per-period", type=int, default=3, help="k: peers probed each period")
    p.add_argument(
        f"--{prefix}indirect-probes", type=int, default=2, help="peers asked after a failed direct probe"
    )
    p.add_argument(
        f"--{prefix}failure-threshold",
        type=int,
        default=2,
        help="failed rounds (direct and indirect probes) in a row before Unhealthy",
    )
    p.add_argument(f"--{prefix}success-threshold", type=int, default=2, help="good rounds before Healthy")
    p.add_argument(f"--{prefix}max-pending-votes", type=int, default=1024)
    p.add_argument(
        f"--{prefix}metrics-bind-address",
        default=DEFAULT_METRICS_BIND_ADDRESS,
        help=f"serve /metrics and /healthz here (default {DEFAULT_METRICS_BIND_ADDRESS}; '' disables)",
    )


def config_from(args: argparse.Namespace) -> HealthConfig:
    return HealthConfig(
        node_name=args.node_name,
        address=args.address,
        cert_file=args.cert,
        key_file=args.key,
        ca_file=args.ca,
        serving_cert_file=args.serving_cert,
        serving_key_file=args.serving_key or args.serving_cert,
        peers=tuple(parse_peers(args.peers).items()),
        peers_file=args.peers_file,
        api_server=args.api_server,
        members_refresh=args.members_refresh,
        vote_url=args.vote_url,
        vote_ca_file=args.vote_ca,
        state_dir=args.state_dir,
        peer_port=args.peer_port,
        kubelet_port=args.kubelet_port,
        period=args.period,
        probe_timeout=args.probe_timeout,
        probes_per_period=args.probes_per_period,
        indirect_probes=args.indirect_probes,
        failure_threshold=args.failure_threshold,
        success_threshold=args.success_threshold,
        max_pending_votes=args.max_pending_votes,
        metrics_bind_address=args.metrics_bind_address,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from edge.health.agent import HealthAgent

    try:
        agent = HealthAgent(config_from(args))
    except (ValueError, OSError) as e:
        log.error("health-agent: %s", e)
        return 2
    try:
        asyncio.run(_serve(agent))
    except OSError as e:
        log.error("health-agent: cannot serve the peer endpoint: %s", e)
        return 1
    return 0


async def _serve(agent: HealthAgent) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(agent.run(), name="health-agent")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
