"""`aggapi-edge tunnel-agent`: flags → AgentConfig → TunnelAgent.run().

The agent's modules (grpc, protobuf) are imported only when this subcommand runs, so the other
`aggapi-edge` subcommands do not carry them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.tunnel.agent import TunnelAgent
    from edge.tunnel.config import AgentConfig

log = logging.getLogger(__name__)

DEFAULT_METRICS_BIND_ADDRESS = "127.0.0.1:10265"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "tunnel-agent",
        help="carry kubelet traffic from aggapi's tunnel server (dials out only)",
        description="Dial out to aggapi tunnel servers (gRPC, mTLS) and carry their dials to local targets.",
    )
    p.add_argument("--server", action="append", required=True, help="tunnel server host:port (repeatable)")
    p.add_argument("--node-name", required=True)
    p.add_argument(
        "--cert", required=True, type=Path, help="client cert, CN=system:node:<node>, O=system:nodes"
    )
    p.add_argument("--key", required=True, type=Path)
    p.add_argument("--ca", required=True, type=Path, help="CA that signed the tunnel servers' certificates")
    p.add_argument("--address", action="append", required=True, help="node IP, as on the Node (repeatable)")
    add_arguments(p)
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=run)


def add_arguments(p: argparse._ActionsContainer, prefix: str = "") -> None:
    """The flags besides the identity ones above (servers, node, cert, CA, addresses). `aggapi-edge all`
    adds them with prefix "tunnel-" (`--tunnel-allow`, dest `tunnel_allow`)."""
    p.add_argument(
        f"--{prefix}allow",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="target the server may dial (repeatable; default: every --address on port 10250)",
    )
    p.add_argument(f"--{prefix}max-connections", type=int, default=256)
    p.add_argument(
        f"--{prefix}server-name", default="", help="TLS name expected in the servers' certificates"
    )
    p.add_argument(
        f"--{prefix}no-follow-peers", action="store_true", help="connect only to the --server endpoints"
    )
    p.add_argument(f"--{prefix}backoff-initial", type=float, default=0.5, help="seconds")
    p.add_argument(f"--{prefix}backoff-max", type=float, default=30.0, help="seconds")
    p.add_argument(
        f"--{prefix}cert-check-interval", type=float, default=10.0, help="seconds between cert file checks"
    )
    p.add_argument(
        f"--{prefix}metrics-bind-address",
        default=DEFAULT_METRICS_BIND_ADDRESS,
        metavar="HOST:PORT",
        help=f"serve /metrics and /healthz here (default {DEFAULT_METRICS_BIND_ADDRESS}; '' disables)",
    )


def config_from(args: argparse.Namespace) -> AgentConfig:
    from edge.tunnel.config import AgentConfig
    from edge.tunnel.protocol import split_hostport

    return AgentConfig(
        node_name=args.node_name,
        servers=tuple(args.server),
        cert_file=args.cert,
        key_file=args.key,
        ca_file=args.ca,
        addresses=tuple(args.address),
        allow=tuple(split_hostport(a) for a in args.allow),
        max_connections=args.max_connections,
        server_name=args.server_name,
        follow_peers=not args.no_follow_peers,
        backoff_initial=args.backoff_initial,
        backoff_max=args.backoff_max,
        cert_check_interval=args.cert_check_interval,
        metrics_bind_address=args.metrics_bind_address,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from edge.tunnel.agent import TunnelAgent

    try:
        config = config_from(args)
        agent = TunnelAgent(config)
    except ValueError as e:
        log.error("tunnel-agent: %s", e)
        return 2
    try:
        asyncio.run(_serve(agent))
    except OSError as e:  # only raised before anything else starts: the status port is taken
        log.error("tunnel-agent: cannot serve --metrics-bind-address %s: %s", config.metrics_bind_address, e)
        return 1
    return 0


async def _serve(agent: TunnelAgent) -> None:
    """Run the agent until SIGTERM/SIGINT, then cancel it (which closes every link and connection)."""
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(agent.run(), name="tunnel-agent")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
