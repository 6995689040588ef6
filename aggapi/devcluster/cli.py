"""`aggapi devcluster` / `python -m aggapi.devcluster`: run the kube-apiserver stand-in."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from aggapi.devcluster.options import DevclusterOptions
from aggapi.machinery.validation import parse_go_duration


def _duration(text: str) -> float:
    try:
        return parse_go_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 500ms, 5s)") from None


def add_flags(p: argparse.ArgumentParser) -> None:
    d = DevclusterOptions()
    p.add_argument("--bind-address", default=d.bind_address, help="a loopback address")
    p.add_argument("--secure-port", type=int, default=d.secure_port)
    p.add_argument("--etcd-servers", default=",".join(d.etcd_servers), help="comma-separated etcd endpoints")
    p.add_argument("--etcd-prefix", default=d.etcd_prefix)
    p.add_argument(
        "--pki-dir", default=d.pki_dir, help="CAs and certificates; whatever is missing is created"
    )
    p.add_argument("--token-auth-file", default="", help='CSV: token,user,uid,"group1,group2"')
    p.add_argument("--authorization-policy-file", default="", help="YAML policy (docs/devcluster.md)")
    p.add_argument(
        "--apiservice-check-interval",
        type=_duration,
        default=d.apiservice_check_interval,
        help="how often APIService availability is checked (Go duration, e.g. 5s)",
    )
    p.add_argument(
        "--egress-selector-config-file",
        default="",
        help="EgressSelectorConfiguration (apiserver.k8s.io/v1beta1): kubelet traffic goes through its "
        "HTTPConnect 'cluster' proxy; without it the devcluster cannot reach any kubelet",
    )
    p.add_argument("--kubelet-client-certificate", default="", help="client certificate for kubelets")
    p.add_argument("--kubelet-client-key", default="")
    p.add_argument("--kubelet-certificate-authority", default="", help="CA of the kubelets' serving certs")
    p.add_argument(
        "--kubelet-preferred-address-types",
        default=",".join(d.kubelet_preferred_address_types),
        help="which Node address to dial, in order of preference",
    )
    p.add_argument(
        "--node-monitor-grace-period",
        type=_duration,
        default=d.node_monitor_grace_period,
        help="a node whose Lease and Ready heartbeat are older than this gets Ready=Unknown (e.g. 40s)",
    )
    p.add_argument(
        "--node-monitor-period",
        type=_duration,
        default=d.node_monitor_period,
        help="how often node heartbeats are checked (e.g. 5s)",
    )
    p.add_argument("-v", "--v", dest="verbosity", type=int, default=0)


def from_args(a: argparse.Namespace) -> DevclusterOptions:
    return DevclusterOptions(
        bind_address=a.bind_address,
        secure_port=a.secure_port,
        etcd_servers=tuple(s.strip() for s in a.etcd_servers.split(",") if s.strip()),
        etcd_prefix=a.etcd_prefix,
        pki_dir=a.pki_dir,
        token_auth_file=a.token_auth_file,
        authorization_policy_file=a.authorization_policy_file,
        apiservice_check_interval=a.apiservice_check_interval,
        egress_selector_config_file=a.egress_selector_config_file,
        kubelet_client_certificate=a.kubelet_client_certificate,
        kubelet_client_key=a.kubelet_client_key,
        kubelet_certificate_authority=a.kubelet_certificate_authority,
        kubelet_preferred_address_types=tuple(
            t.strip() for t in a.kubelet_preferred_address_types.split(",") if t.strip()
        ),
        node_monitor_grace_period=a.node_monitor_grace_period,
        node_monitor_period=a.node_monitor_period,
    )


def run_devcluster(a: argparse.Namespace) -> int:
    level = logging.DEBUG if a.verbosity >= 4 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    opts = from_args(a)
    errs = opts.validate()
    if errs:
        for e in errs:
            print(f"devcluster: {e}", file=sys.stderr)
        return 2
    from aggapi.devcluster.server import run

    asyncio.run(run(opts))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="aggapi devcluster", description="kube-apiserver stand-in (a test double)"
    )
    add_flags(p)
    return run_devcluster(p.parse_args(argv))
