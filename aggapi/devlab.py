"""`aggapi dev` (what `make run` starts): etcd, the devcluster (a kube-apiserver stand-in) and
`aggapi serve` behind it, registered as the APIService v1alpha1.edge.aggapi.io exactly as in a cluster,
so `kubectl get nodepools` goes kubectl → devcluster (authn, authz, aggregation) → aggapi (front-proxy
authn, SubjectAccessReview) → etcd. Everything lives under one state directory; Ctrl-C stops it all.

The lab itself is aggapi/devcluster/lab.py (`Lab`), which the tests start too (tests/support/lab.py)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from aggapi.devcluster import labcontrol
from aggapi.devcluster.lab import APISERVICE, Lab, LabConfig
from aggapi.devcluster.labcontrol import ACTIONS
from aggapi.devcluster.labkit import etcd_binary
from certs.files import load_or_create_ca, write_pair
from certs.pki import issue_client, issue_serving

log = logging.getLogger(__name__)


# ---- the PKI of a standalone aggapi (used by tests and benchmarks that run aggapi alone) ------------


@dataclass(frozen=True, slots=True)
class LabPKI:
    ca: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path


def make_pki(directory: Path) -> LabPKI:
    """CA, a serving cert for 127.0.0.1/localhost and an admin (system:masters) client cert."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = load_or_create_ca(directory, "ca", common_name="aggapi-dev-ca")
    paths = LabPKI(
        directory / "ca.crt",
        directory / "apiserver.crt",
        directory / "apiserver.key",
        directory / "admin.crt",
        directory / "admin.key",
    )
    if not paths.serving_cert.exists():
        serving = issue_serving(ca, common_name="aggapi", dns_names=["localhost"], ips=["127.0.0.1", "::1"])
        write_pair(serving, paths.serving_cert, paths.serving_key)
    if not paths.admin_cert.exists():
        admin = issue_client(ca, common_name="admin", organizations=["system:masters"])
        write_pair(admin, paths.admin_cert, paths.admin_key)
    return paths


def add_dev_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=".aggapi-dev", help="state directory of the lab")
    p.add_argument("--port", type=int, default=6443, help="the devcluster's port (what kubectl uses)")
    p.add_argument("--aggapi-port", type=int, default=8443, help="aggapi's own port")
    p.add_argument(
        "--nodes",
        type=int,
        default=4,  # two per pool: a node's verdict needs a peer in its pool
        help="simulated edge nodes (kubelet-sim + tunnel agent on 127.0.1.10, .11, ...); 0 for none",
    )
    p.add_argument(
        "--tunnel-port", type=int, default=0, help="aggapi's tunnel (agent) port; 0 picks a free one"
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=ACTIONS,
        help="with a lab running in --dir: cut or heal NODE's cloud link (tunnel, heartbeats, votes, "
        "shadow upstream)",
    )
    p.add_argument("node", nargs="?", help="the edge node to cut or heal, e.g. edge-0")


def run_dev(args: argparse.Namespace) -> int:
    if args.action is not None:
        if not args.node:
            print(
                f"aggapi dev {args.action}: name the node, e.g. `aggapi dev {args.action} edge-0`",
                file=sys.stderr,
            )
            return 2
        try:
            print(labcontrol.request(Path(args.dir).resolve(), args.node, args.action))
        except RuntimeError as exc:
            print(f"aggapi dev {args.action} {args.node}: {exc}", file=sys.stderr)
            return 1
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.nodes < 0:
        print("aggapi dev: --nodes must be 0 or more", file=sys.stderr)
        return 2
    return run_lab(
        Path(args.dir), args.port, args.aggapi_port, nodes=args.nodes, tunnel_port=args.tunnel_port
    )


def hints(lab: Lab) -> str:
    venv_bin = Path(sys.executable).parent
    k = f"kubectl --kubeconfig {lab.kubeconfig}"
    lines = [
        f"\nThe aggapi lab is up: kubectl → devcluster {lab.url} → aggapi {lab.aggapi_url} (APIService "
        f"{APISERVICE} Available).\nLogs: {lab.state}/*.log\n",
        f"  export PATH={venv_bin}:$PATH   # the kubectl installed in .venv",
        f"  {k} get nodepools",
        f"  {k} api-resources --api-group=edge.aggapi.io",
        f"  {k} get apiservice {APISERVICE}",
    ]
    if lab.edge is not None:
        nodes = lab.edge.nodes
        n, pod = nodes[0].name, nodes[0].pod
        lines += [
            f"\n{len(nodes)} edge nodes ({', '.join(f'{x.name} {x.address}' for x in nodes)}), reached only "
            f"through aggapi's tunnel (agents on 127.0.0.1:{lab.tunnel_port}):",
            f"  {k} get nodes,pods -o wide",
            f"  {k} logs -f {pod}",
            f"  {k} exec -it {pod} -- sh",
            f"  {k} port-forward pod/{pod} 8080:8080   # an echo server",
            f"  {k} get --raw /api/v1/nodes/{n}/proxy/healthz",
            "\nCut and restore a node's cloud link (autonomy, health verdicts):",
            f"  aggapi dev --dir {lab.state} cut {n}     # and: ... heal {n}",
        ]
    return "\n".join(lines) + "\n\nPress Ctrl-C to stop."


def run_lab(
    state: Path, port: int = 6443, aggapi_port: int = 8443, *, nodes: int = 0, tunnel_port: int = 0
) -> int:
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    lab = Lab(LabConfig(state, port, aggapi_port, nodes=nodes, tunnel_port=tunnel_port))
    control = labcontrol.ControlPoller(lab.state, lambda node, action: control_link(lab, node, action))
    pid_file = lab.state / labcontrol.PID_FILE
    try:
        lab.start()
        pid_file.write_text(f"{os.getpid()}\n")
        print(hints(lab), flush=True)
        while not stop["now"]:
            control.poll()
            for c in lab.children.values():
                if not c.running:
                    print(f"{c.name} exited; see {c.log_file}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as exc:
        print(f"aggapi dev: {exc}", file=sys.stderr)
        return 1
    finally:
        pid_file.unlink(missing_ok=True)
        lab.stop()
        print("stopped.", flush=True)
    return 0


def control_link(lab: Lab, node: str, action: str) -> str:
    """What `aggapi dev cut|heal <node>` does inside the running lab."""
    names = [n.name for n in lab.edge.nodes] if lab.edge is not None else []
    if node not in names:
        raise RuntimeError(f"no edge node {node!r} in this lab (nodes: {', '.join(names) or 'none'})")
    if action == "cut":
        if lab.link_is_cut(node):
            return f"{node}: the cloud link was already cut"
        lab.cut_link(node)
        return f"{node}: cloud link cut (tunnel agent stopped; heartbeats, votes and API traffic refused)"
    if not lab.link_is_cut(node):
        return f"{node}: the cloud link is up"
    lab.heal_link(node)
    return f"{node}: cloud link restored"


__all__ = ["APISERVICE", "Lab", "LabConfig", "LabPKI", "etcd_binary", "make_pki", "run_lab"]
