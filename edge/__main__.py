"""`aggapi-edge`: the edge-node components: shadow, tunnel-agent, health-agent, all (the three in one
process, edge/allinone.py) and kubelet-sim (a simulated kubelet for labs and tests)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from edge import allinone
from edge.health import cli as health_cli
from edge.kubelet_sim import cli as kubelet_sim_cli
from edge.shadow import cli as shadow_cli
from edge.tunnel import cli as tunnel_cli

VERSION = "0.1.0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aggapi-edge", description="aggapi edge-node components")
    parser.add_argument("--version", action="version", version=f"aggapi-edge {VERSION}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    shadow_cli.add_parser(subparsers)
    tunnel_cli.add_parser(subparsers)
    kubelet_sim_cli.add_parser(subparsers)
    health_cli.add_parser(subparsers)
    allinone.add_parser(subparsers)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
