"""`aggapi-edge`: the edge-node components. Subcommands (shadow, tunnel-agent, health-agent, all) are
added as each component lands; until then this only reports its version."""

from __future__ import annotations

import argparse
import sys

VERSION = "0.1.0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aggapi-edge", description="aggapi edge-node components")
    parser.add_argument("--version", action="version", version=f"aggapi-edge {VERSION}")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
