"""`aggapi serve|certs|dev|devcluster|manifests`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from aggapi.certs_cli import add_certs_parser, run_certs
from aggapi.manifests import add_manifests_parser, run_manifests
from aggapi.options import add_serve_flags, from_args

log = logging.getLogger("aggapi")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aggapi", description="Kubernetes at the edge: the aggregated API server"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the aggregated API server")
    add_serve_flags(p_serve)
    add_certs_parser(sub)
    add_manifests_parser(sub)
    # The lab and the kube-apiserver stand-in are dev tools: imported here only, never by the server.
    from aggapi.devcluster.cli import add_flags as add_devcluster_flags
    from aggapi.devlab import add_dev_flags

    add_dev_flags(sub.add_parser("dev", help="run the local lab (etcd + devcluster + aggapi) for kubectl"))
    add_devcluster_flags(sub.add_parser("devcluster", help="run the kube-apiserver stand-in (a test double)"))
    args = parser.parse_args(argv)
    if args.command == "certs":
        return run_certs(args)
    if args.command == "manifests":
        return run_manifests(args)
    if args.command == "dev":
        from aggapi.devlab import run_dev

        return run_dev(args)
    if args.command == "devcluster":
        from aggapi.devcluster.cli import run_devcluster

        return run_devcluster(args)
    # Like the Go generic apiserver: in a pod without kubeconfig flags, delegate to the cluster.
    opts = from_args(args, in_cluster=bool(os.environ.get("KUBERNETES_SERVICE_HOST")))
    level = logging.DEBUG if opts.verbosity >= 4 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    errs = opts.validate()
    if errs:
        for e in errs:
            print(f"aggapi serve: {e}", file=sys.stderr)
        return 2
    from aggapi.serve import serve

    asyncio.run(serve(opts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
