"""`aggapi serve|certs|dev`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from pathlib import Path

from aiohttp import web

from aggapi.certs_cli import add_certs_parser, run_certs
from aggapi.options import ServerOptions, add_serve_flags, from_args

log = logging.getLogger("aggapi")


def _serving_files(opts: ServerOptions) -> tuple[str, str]:
    s = opts.serving
    if s.tls_cert_file:
        return s.tls_cert_file, s.tls_private_key_file
    from certs.files import ensure_self_signed_serving

    names = ["localhost", socket.gethostname()]
    cert, key = ensure_self_signed_serving(
        Path(s.cert_dir), common_name="aggapi", dns_names=names, ips=["127.0.0.1", "::1"]
    )
    return str(cert), str(key)


async def serve(opts: ServerOptions) -> None:
    from aggapi.server import build_app, server_ssl_context

    cert, key = _serving_files(opts)
    ctx = server_ssl_context(cert, key, opts.authn.client_ca_file)
    app = build_app(opts)
    # handler_cancellation: a client that goes away cancels its handler, so idle watches are freed.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner, opts.serving.bind_address, opts.serving.secure_port, ssl_context=ctx, backlog=1024
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aggapi", description="Kubernetes at the edge: the aggregated API server"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the aggregated API server")
    add_serve_flags(p_serve)
    add_certs_parser(sub)
    p_dev = sub.add_parser("dev", help="run the local lab (etcd + aggapi) for kubectl")
    p_dev.add_argument("--dir", default=".aggapi-dev", help="state directory of the lab")
    p_dev.add_argument("--port", type=int, default=6443)
    args = parser.parse_args(argv)
    if args.command == "certs":
        return run_certs(args)
    if args.command == "dev":
        from aggapi.devlab import run_lab

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return run_lab(Path(args.dir), args.port)
    opts = from_args(args)
    level = logging.DEBUG if opts.verbosity >= 4 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    errs = opts.validate()
    if errs:
        for e in errs:
            print(f"aggapi serve: {e}", file=sys.stderr)
        return 2
    asyncio.run(serve(opts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
