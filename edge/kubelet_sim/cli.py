"""`aggapi-edge kubelet-sim`: flags → KubeletSimConfig → KubeletSim.run(). Flag names follow the kubelet's."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

import yaml

from edge.flags import duration as _duration
from edge.kubelet_sim.apiview import PodClientConfig
from edge.kubelet_sim.config import KUBELET_PORT, KubeletSimConfig, LogTicker, NodeIdentity, PortMapping
from edge.kubelet_sim.heartbeat import HeartbeatConfig
from edge.kubelet_sim.server import KubeletSim

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "kubelet-sim",
        help="a simulated kubelet for the lab and tests (logs, exec, attach, port-forward, heartbeats)",
        description="Serve the kubelet API on <node-ip>:10250 for simulated pods.",
    )
    p.add_argument("--node-name", required=True)
    p.add_argument("--node-ip", required=True, help="the node's own address, e.g. 127.0.1.2")
    p.add_argument("--port", type=int, default=KUBELET_PORT)
    p.add_argument("--tls-cert-file", required=True, type=Path, help="serving cert for --node-ip")
    p.add_argument("--tls-private-key-file", required=True, type=Path)
    p.add_argument(
        "--client-ca-file", required=True, type=Path, help="every client cert it signed is authorized"
    )
    p.add_argument("--root-dir", required=True, type=Path, help="pods' scratch directories and logs")
    p.add_argument("--pods-file", type=Path, help="Pods as JSON/YAML: a Pod, a list, or a PodList")
    p.add_argument(
        "--port-forward",
        action="append",
        default=[],
        metavar="NS/POD:PORT[=HOST:PORT]",
        help="where forwards to a pod port go; without a target the sim runs an echo server (repeatable)",
    )
    p.add_argument(
        "--log-ticker",
        action="append",
        default=[],
        metavar="NS/POD/CONTAINER[=SECONDS]",
        help="append a line to that container's log periodically (repeatable)",
    )
    hb = p.add_argument_group("heartbeats (Node Lease and Ready condition; all of them or none)")
    hb.add_argument("--api-server", default="", help="kube-apiserver URL, e.g. https://127.0.0.1:6443")
    hb.add_argument(
        "--pod-client-server",
        default="",
        help="with --api-view-file: a sample in-cluster client also lists+watches the ConfigMaps of "
        "namespace default here (https://, the `kubernetes` Service a pod gets), with a token",
    )
    hb.add_argument("--pod-client-token-file", type=Path, help="the sample client's ServiceAccount token")
    hb.add_argument("--pod-client-ca-file", type=Path, help="CA of the --pod-client-server's certificate")
    hb.add_argument(
        "--api-view-file",
        type=Path,
        help="list+watch this node's pods and the Services (as kubelet) and EndpointSlices (as kube-proxy) "
        "from --api-server, and keep what is seen in this JSON file",
    )
    hb.add_argument(
        "--api-client-cert-file", type=Path, help="node client cert (CN=system:node:<name>, O=system:nodes)"
    )
    hb.add_argument("--api-client-key-file", type=Path)
    hb.add_argument("--api-ca-file", type=Path, help="CA of kube-apiserver's serving certificate")
    hb.add_argument("--node-lease-renew-interval", type=_duration, default=10.0, help="e.g. 10s, 500ms")
    hb.add_argument("--node-status-update-frequency", type=_duration, default=10.0, help="e.g. 10s")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=run)


def _heartbeat(args: argparse.Namespace) -> HeartbeatConfig | None:
    given = [args.api_server, args.api_client_cert_file, args.api_client_key_file, args.api_ca_file]
    if not any(given):
        return None
    if str(args.api_server).startswith("http://"):  # the node's shadow-apiserver adds the credentials
        if any(given[1:]):
            raise ValueError("an http:// --api-server (the shadow-apiserver) takes no client cert or CA")
    elif not all(given):
        raise ValueError(
            "--api-server, --api-client-cert-file, --api-client-key-file and --api-ca-file go together "
            "(or an http:// --api-server: the node's shadow-apiserver)"
        )
    return HeartbeatConfig(
        args.api_server,
        args.api_client_cert_file,
        args.api_client_key_file,
        args.api_ca_file,
        lease_renew_interval=args.node_lease_renew_interval,
        status_update_frequency=args.node_status_update_frequency,
    )


def _pod_client(args: argparse.Namespace) -> PodClientConfig | None:
    given = [args.pod_client_server, args.pod_client_token_file, args.pod_client_ca_file]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("--pod-client-server, --pod-client-token-file and --pod-client-ca-file go together")
    return PodClientConfig(args.pod_client_server, args.pod_client_token_file, args.pod_client_ca_file)


def _pods(path: Path | None) -> tuple[dict[str, Any], ...]:
    if path is None:
        return ()
    doc = yaml.safe_load(path.read_text())
    items = doc.get("items", [doc]) if isinstance(doc, dict) else doc or []
    return tuple(items)


def _port_mapping(spec: str) -> PortMapping:
    where, _, target = spec.partition("=")
    ref, _, port = where.rpartition(":")
    ns, _, pod = ref.partition("/")
    if not (ns and pod and port.isdigit()):
        raise ValueError(f"--port-forward {spec!r}: want NS/POD:PORT[=HOST:PORT]")
    return PortMapping(ns, pod, int(port), target or None)


def _ticker(spec: str) -> LogTicker:
    ref, _, interval = spec.partition("=")
    parts = ref.split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"--log-ticker {spec!r}: want NS/POD/CONTAINER[=SECONDS]")
    ns, pod, container = parts
    return LogTicker(ns, pod, container, interval=float(interval or 1.0))


def config_from(args: argparse.Namespace) -> KubeletSimConfig:
    return KubeletSimConfig(
        node=NodeIdentity(args.node_name, args.node_ip),
        port=args.port,
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_private_key_file,
        client_ca_file=args.client_ca_file,
        root_dir=args.root_dir,
        pods=_pods(args.pods_file),
        port_forwards=tuple(_port_mapping(s) for s in args.port_forward),
        log_tickers=tuple(_ticker(s) for s in args.log_ticker),
        heartbeat=_heartbeat(args),
        api_view_file=args.api_view_file,
        pod_client=_pod_client(args),
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        sim = KubeletSim(config_from(args))
    except (ValueError, OSError, yaml.YAMLError) as e:
        log.error("kubelet-sim: %s", e)
        return 2
    try:
        asyncio.run(_serve(sim))
    except OSError as e:  # e.g. the node address is taken or not local
        log.error("kubelet-sim: %s", e)
        return 1
    return 0


async def _serve(sim: KubeletSim) -> None:
    task = asyncio.create_task(sim.run(), name="kubelet-sim")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
