"""`aggapi serve` options of the edge parts: the tunnel and its egress, kubelet TLS, the controllers'
kube-apiserver. Kept apart from options.py so each stays small; options.py composes them."""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TUNNEL_PORT = 8091
DEFAULT_EGRESS_PORT = 8090
DEFAULT_KUBELET_PORT = 10250
_UDS_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL


def _missing(flag: str, path: str) -> list[str]:
    return [f"{flag} {path}: no such file"] if path and not os.path.isfile(path) else []


def _port_errors(flag: str, port: int, *, zero_ok: bool) -> list[str]:
    low = 0 if zero_ok else 1
    return [] if low <= port <= 65535 else [f"{flag} {port} must be between {low} and 65535"]


@dataclass(frozen=True, slots=True)
class TunnelOptions:
    """The edge tunnel inside `aggapi serve`: the agents' gRPC port and the HTTP CONNECT egress for
    kube-apiserver. It runs only when --tunnel-agent-ca-file is given and --tunnel-port is not 0."""

    port: int = DEFAULT_TUNNEL_PORT
    bind_address: str = ""  # "" = --bind-address
    agent_ca_file: str = ""
    cert_file: str = ""  # "" = the serving certificate
    key_file: str = ""
    allowed_ports: tuple[int, ...] = (DEFAULT_KUBELET_PORT,)
    peers: tuple[str, ...] = ()
    advertise_address: str = ""  # host:port agents reach this replica at; published for replica discovery
    egress_uds_path: str = ""
    egress_port: int = DEFAULT_EGRESS_PORT  # listens only with --egress-client-ca-file
    egress_client_ca_file: str = ""
    egress_allowed_names: tuple[str, ...] = ()
    egress_direct_cidrs: tuple[str, ...] = ()
    egress_direct_domains: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.agent_ca_file) and self.port != 0

    @property
    def egress_tls(self) -> bool:
        return self.enabled and self.egress_port != 0 and bool(self.egress_client_ca_file)

    def validate(self) -> list[str]:
        errs = _port_errors("--tunnel-port", self.port, zero_ok=True)
        errs += _port_errors("--egress-port", self.egress_port, zero_ok=True)
        if self.bind_address:
            try:
                ipaddress.ip_address(self.bind_address)
            except ValueError:
                errs.append(f"--tunnel-bind-address {self.bind_address!r} is not an IP address")
        errs += _missing("--tunnel-agent-ca-file", self.agent_ca_file)
        if bool(self.cert_file) != bool(self.key_file):
            errs.append("--tunnel-cert-file and --tunnel-private-key-file must be given together")
        errs += _missing("--tunnel-cert-file", self.cert_file)
        errs += _missing("--tunnel-private-key-file", self.key_file)
        errs += _missing("--egress-client-ca-file", self.egress_client_ca_file)
        if not self.allowed_ports:
            errs.append("--tunnel-allowed-ports must name at least one port")
        for p in self.allowed_ports:
            errs += _port_errors("--tunnel-allowed-ports: port", p, zero_ok=False)
        for flag, peer in [("--tunnel-peer", p) for p in self.peers] + (
            [("--tunnel-advertise-address", self.advertise_address)] if self.advertise_address else []
        ):
            host, sep, port = peer.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                errs.append(f"{flag} {peer!r} must be host:port (IPv6 as [addr]:port)")
        if self.egress_uds_path:
            uds = Path(self.egress_uds_path)
            if len(str(uds).encode()) > _UDS_PATH_MAX:
                errs.append(
                    f"--egress-uds-path {uds}: longer than {_UDS_PATH_MAX} bytes (a unix socket limit)"
                )
            if not uds.is_absolute():
                errs.append(f"--egress-uds-path {uds} must be an absolute path")
            elif not uds.parent.is_dir():
                errs.append(f"--egress-uds-path {uds}: directory {uds.parent} does not exist")
        if self.egress_allowed_names and not self.egress_client_ca_file:
            errs.append("--egress-allowed-names needs --egress-client-ca-file (the TLS egress)")
        for cidr in self.egress_direct_cidrs:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                errs.append(f"--egress-direct-cidrs: {cidr!r} is not a CIDR (e.g. 10.96.0.0/12)")
        if self.egress_direct_domains and not self.egress_direct_cidrs:
            errs.append(
                "--egress-direct-domains needs --egress-direct-cidrs: names are dialled only when they "
                "resolve into those ranges"
            )
        for d in self.egress_direct_domains:
            if not d.strip(".") or " " in d or "/" in d or ":" in d:
                errs.append(f"--egress-direct-domains: {d!r} is not a DNS suffix (e.g. svc or cluster.local)")
        if not self.enabled:
            egress = {
                "--egress-uds-path": self.egress_uds_path,
                "--egress-client-ca-file": self.egress_client_ca_file,
                "--egress-direct-cidrs": ",".join(self.egress_direct_cidrs),
            }
            for flag, value in egress.items():
                if value:
                    errs.append(
                        f"{flag} needs the tunnel: give --tunnel-agent-ca-file (and a --tunnel-port other "
                        "than 0)"
                    )
        return errs


@dataclass(frozen=True, slots=True)
class KubeletOptions:
    """How the edgenodes proxy talks TLS to kubelets (kube-apiserver's flag names). The kubelet's serving
    certificate is always verified: without --kubelet-certificate-authority the proxy refuses to work."""

    client_certificate: str = ""
    client_key: str = ""
    certificate_authority: str = ""

    def validate(self) -> list[str]:
        errs = []
        if bool(self.client_certificate) != bool(self.client_key):
            errs.append("--kubelet-client-certificate and --kubelet-client-key must be given together")
        errs += _missing("--kubelet-client-certificate", self.client_certificate)
        errs += _missing("--kubelet-client-key", self.client_key)
        errs += _missing("--kubelet-certificate-authority", self.certificate_authority)
        return errs


DEFAULT_LEASE_NAMESPACE = "aggapi-system"  # where the shipped RBAC lets aggapi write Leases


@dataclass(frozen=True, slots=True)
class ControllerOptions:
    """kube-apiserver for the Node informer (tunnel identity checks, edgenodes) and the controllers."""

    kubeconfig: str = ""
    in_cluster: bool = False  # use the pod's service account when no --kubeconfig is given
    # Leader election among replicas (kube-controller-manager's flag names and defaults).
    leader_elect: bool = True
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    lease_namespace: str = DEFAULT_LEASE_NAMESPACE
    lease_name: str = "aggapi-controllers"
    # Edge health votes expire this long after their write (3 probe periods of 10 s; see docs/health.md).
    health_vote_ttl: float = 30.0
    # The fewest recent observers a verdict needs (a majority of the node's peers when there are fewer).
    health_min_voters: int = 3
    # Evict the pods of an edge node whose verdict stayed Unhealthy this long (docs/health.md, eviction).
    health_eviction: bool = True
    health_eviction_grace_period: float = 300.0
    # Touch a Service's EndpointSlices/Endpoints when its topology scope changes (docs/shadow-filters.md).
    servicetopology_trigger: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.kubeconfig) or self.in_cluster

    def validate(self) -> list[str]:
        errs = _missing("--kubeconfig", self.kubeconfig)
        if self.leader_elect and not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            errs.append(
                "--leader-elect-lease-duration > --leader-elect-renew-deadline > "
                "--leader-elect-retry-period > 0"
            )
        if self.health_vote_ttl < 2:
            errs.append("--health-vote-ttl must be at least 2s (etcd's smallest lease)")
        if self.health_min_voters < 1:
            errs.append("--health-min-voters must be at least 1")
        if self.health_eviction_grace_period < 0:
            errs.append("--health-eviction-grace-period must not be negative")
        return errs


def port_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ports") from None


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _seconds(text: str) -> float:
    from aggapi.machinery.validation import parse_go_duration

    try:
        return parse_go_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 15s, 1m)") from None


def add_controller_flags(p: argparse.ArgumentParser) -> None:
    c = ControllerOptions()
    p.add_argument(
        "--leader-elect",
        type=_bool,
        default=c.leader_elect,
        help="elect one replica (Lease in kube-apiserver) to run the controllers",
    )
    p.add_argument("--leader-elect-lease-duration", type=_seconds, default=c.lease_duration)
    p.add_argument("--leader-elect-renew-deadline", type=_seconds, default=c.renew_deadline)
    p.add_argument("--leader-elect-retry-period", type=_seconds, default=c.retry_period)
    p.add_argument(
        "--leader-elect-resource-namespace",
        default="",
        help=f"namespace of the Lease (default: the pod's namespace in-cluster, else {c.lease_namespace})",
    )
    p.add_argument("--leader-elect-resource-name", default=c.lease_name)
    p.add_argument(
        "--health-vote-ttl",
        type=_seconds,
        default=c.health_vote_ttl,
        help="how long an edge health vote counts after it is written (an etcd lease; default 30s, "
        "3 probe periods)",
    )
    p.add_argument(
        "--health-min-voters",
        type=int,
        default=c.health_min_voters,
        help="the fewest recent observers (pool peers with a live vote about a node) a Healthy or "
        "Unhealthy verdict needs; a majority of the node's peers when the pool is smaller (default 3)",
    )
    p.add_argument(
        "--health-eviction",
        type=_bool,
        default=c.health_eviction,
        help="evict the pods of edge nodes whose peer-vote verdict stays Unhealthy, and let pods on edge "
        "nodes tolerate the not-ready/unreachable taints forever by default (default true)",
    )
    p.add_argument(
        "--health-eviction-grace-period",
        type=_seconds,
        default=c.health_eviction_grace_period,
        help="how long a node's verdict must stay Unhealthy before its pods are evicted (default 5m)",
    )
    p.add_argument(
        "--servicetopology-trigger",
        type=_bool,
        default=c.servicetopology_trigger,
        help="touch (annotation openyurt.io/update-trigger) the EndpointSlices and Endpoints of Services "
        "with openyurt.io/topologyKeys when the annotation or NodePool membership changes, so edge "
        "kube-proxy/coredns get them filtered for the new scope (default true)",
    )


SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _lease_namespace(flag: str, in_cluster: bool) -> str:
    if flag:
        return flag
    if in_cluster:
        try:
            return SA_NAMESPACE_FILE.read_text().strip() or DEFAULT_LEASE_NAMESPACE
        except OSError:
            pass
    return DEFAULT_LEASE_NAMESPACE


def controller_options(a: argparse.Namespace, *, in_cluster: bool) -> ControllerOptions:
    return ControllerOptions(
        a.kubeconfig,
        in_cluster=in_cluster,
        leader_elect=a.leader_elect,
        lease_duration=a.leader_elect_lease_duration,
        renew_deadline=a.leader_elect_renew_deadline,
        retry_period=a.leader_elect_retry_period,
        lease_namespace=_lease_namespace(a.leader_elect_resource_namespace, in_cluster),
        lease_name=a.leader_elect_resource_name,
        health_vote_ttl=a.health_vote_ttl,
        health_min_voters=a.health_min_voters,
        health_eviction=a.health_eviction,
        health_eviction_grace_period=a.health_eviction_grace_period,
        servicetopology_trigger=a.servicetopology_trigger,
    )


def add_edge_flags(p: argparse.ArgumentParser, t: TunnelOptions) -> None:
    p.add_argument(
        "--kubeconfig",
        default="",
        help="kube-apiserver for the Node informer and the controllers (default: in-cluster when in a pod)",
    )
    add_controller_flags(p)
    p.add_argument(
        "--tunnel-port",
        type=int,
        default=t.port,
        help="agents' gRPC/mTLS port (0 disables the tunnel)",
    )
    p.add_argument("--tunnel-bind-address", default="", help="default: --bind-address")
    p.add_argument(
        "--tunnel-agent-ca-file",
        default="",
        help="CA of the agents' node client certificates (CN=system:node:<name>, O=system:nodes); "
        "the tunnel runs only when this is given",
    )
    p.add_argument("--tunnel-cert-file", default="", help="default: the serving certificate")
    p.add_argument("--tunnel-private-key-file", default="", help="default: the serving key")
    p.add_argument(
        "--tunnel-allowed-ports",
        type=port_list,
        default=t.allowed_ports,
        help="comma-separated ports the tunnel may dial on nodes",
    )
    p.add_argument(
        "--tunnel-peer",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="another replica's agent endpoint, announced to agents so they connect to every replica "
        "(repeatable)",
    )
    p.add_argument(
        "--tunnel-advertise-address",
        default="",
        metavar="HOST:PORT",
        help="where agents reach this replica; published in etcd so every replica tells its agents about "
        "the others (replica discovery for HA)",
    )
    p.add_argument(
        "--egress-uds-path", default="", help="unix socket (mode 0600) for kube-apiserver's egress"
    )
    p.add_argument(
        "--egress-port",
        type=int,
        default=t.egress_port,
        help="TLS HTTP CONNECT port for kube-apiserver's egress (0 disables; needs --egress-client-ca-file)",
    )
    p.add_argument("--egress-client-ca-file", default="", help="CA of the egress clients' certificates")
    p.add_argument("--egress-allowed-names", default="", help="comma-separated client CNs (default: any)")
    p.add_argument(
        "--egress-direct-cidrs",
        default="",
        help="comma-separated ranges the egress dials directly when the destination is not an edge node "
        "(e.g. the Service and Pod CIDRs, cloud nodes' subnet); default: none, such CONNECTs get 403",
    )
    p.add_argument(
        "--egress-direct-domains",
        default="",
        help="comma-separated DNS suffixes (e.g. svc) the egress resolves and dials directly when they "
        "resolve into --egress-direct-cidrs",
    )
    p.add_argument(
        "--kubelet-client-certificate",
        default="",
        help="client cert the edgenodes proxy shows kubelets",
    )
    p.add_argument("--kubelet-client-key", default="")
    p.add_argument(
        "--kubelet-certificate-authority",
        default="",
        help="CA that signed the kubelets' serving certificates (required by the edgenodes proxy)",
    )
