"""`aggapi serve` configuration: one frozen dataclass per concern; flag names follow kube's apiserver."""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass, field

from aggapi.edgeoptions import (
    ControllerOptions,
    KubeletOptions,
    TunnelOptions,
    add_edge_flags,
    controller_options,
)
from aggapi.machinery.validation import parse_go_duration


@dataclass(frozen=True, slots=True)
class ServingOptions:
    bind_address: str = "0.0.0.0"
    secure_port: int = 6443
    tls_cert_file: str = ""
    tls_private_key_file: str = ""
    cert_dir: str = "apiserver.local.config/certificates"
    cert_reload_interval: float = 10.0  # how often certificate and CA files are checked for changes

    def validate(self) -> list[str]:
        errs = []
        if not 0 <= self.secure_port <= 65535:
            errs.append(f"--secure-port {self.secure_port} must be between 0 and 65535")
        try:
            ipaddress.ip_address(self.bind_address)
        except ValueError:
            errs.append(f"--bind-address {self.bind_address!r} is not an IP address")
        if bool(self.tls_cert_file) != bool(self.tls_private_key_file):
            errs.append("--tls-cert-file and --tls-private-key-file must be given together")
        for f in (self.tls_cert_file, self.tls_private_key_file):
            if f and not os.path.isfile(f):
                errs.append(f"{f}: no such file")
        return errs


@dataclass(frozen=True, slots=True)
class EtcdOptions:
    servers: tuple[str, ...] = ("http://127.0.0.1:2379",)
    prefix: str = "/registry"
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""
    compaction_interval: float = 300.0  # kube's --etcd-compaction-interval default (5m); 0 disables

    def validate(self) -> list[str]:
        errs = []
        if self.compaction_interval < 0:
            errs.append("--etcd-compaction-interval must not be negative")
        if not self.servers:
            errs.append("--etcd-servers must name at least one endpoint")
        if not self.prefix.startswith("/"):
            errs.append(f"--etcd-prefix {self.prefix!r} must start with /")
        if bool(self.certfile) != bool(self.keyfile):
            errs.append("--etcd-certfile and --etcd-keyfile must be given together")
        for f in (self.cafile, self.certfile, self.keyfile):
            if f and not os.path.isfile(f):
                errs.append(f"{f}: no such file")
        return errs


@dataclass(frozen=True, slots=True)
class AuthnOptions:
    """Delegated authentication/authorization, named as in kube's generic apiserver. With neither a
    kubeconfig nor in-cluster credentials the server authenticates client certificates only and lets
    every authenticated user do everything (the standalone lab mode)."""

    client_ca_file: str = ""
    requestheader_client_ca_file: str = ""
    requestheader_allowed_names: tuple[str, ...] = ()
    requestheader_username_headers: tuple[str, ...] = ("X-Remote-User",)
    requestheader_group_headers: tuple[str, ...] = ("X-Remote-Group",)
    requestheader_extra_headers_prefix: tuple[str, ...] = ("X-Remote-Extra-",)
    authentication_kubeconfig: str = ""
    authorization_kubeconfig: str = ""
    in_cluster: bool = False  # use the pod's service account when no kubeconfig is given
    always_allow_paths: tuple[str, ...] = ("/healthz", "/readyz", "/livez")
    always_allow_groups: tuple[str, ...] = ("system:masters",)
    token_cache_ttl: float = 10.0
    authz_allowed_ttl: float = 10.0
    authz_denied_ttl: float = 10.0

    @property
    def delegated_authn(self) -> bool:
        return bool(self.authentication_kubeconfig) or self.in_cluster

    @property
    def delegated_authz(self) -> bool:
        return bool(self.authorization_kubeconfig) or self.in_cluster

    def validate(self) -> list[str]:
        errs = []
        for flag, f in (
            ("--client-ca-file", self.client_ca_file),
            ("--requestheader-client-ca-file", self.requestheader_client_ca_file),
            ("--authentication-kubeconfig", self.authentication_kubeconfig),
            ("--authorization-kubeconfig", self.authorization_kubeconfig),
        ):
            if f and not os.path.isfile(f):
                errs.append(f"{flag} {f}: no such file")
        return errs


@dataclass(frozen=True, slots=True)
class CacheOptions:
    capacity: int = 4096
    bookmark_interval: float = 60.0

    def validate(self) -> list[str]:
        return [] if self.capacity > 0 else ["--watch-cache-size must be positive"]


@dataclass(frozen=True, slots=True)
class ServerOptions:
    serving: ServingOptions = field(default_factory=ServingOptions)
    etcd: EtcdOptions = field(default_factory=EtcdOptions)
    authn: AuthnOptions = field(default_factory=AuthnOptions)
    cache: CacheOptions = field(default_factory=CacheOptions)
    tunnel: TunnelOptions = field(default_factory=TunnelOptions)
    kubelet: KubeletOptions = field(default_factory=KubeletOptions)
    controllers: ControllerOptions = field(default_factory=ControllerOptions)
    verbosity: int = 0

    def validate(self) -> list[str]:
        return (
            self.serving.validate()
            + self.etcd.validate()
            + self.authn.validate()
            + self.cache.validate()
            + self.tunnel.validate()
            + self.kubelet.validate()
            + self.controllers.validate()
        )


def _duration(text: str) -> float:
    try:
        return parse_go_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 300s, 5m, 1h)") from None


def add_serve_flags(p: argparse.ArgumentParser) -> None:
    d = ServerOptions()
    p.add_argument("--bind-address", default=d.serving.bind_address)
    p.add_argument("--secure-port", type=int, default=d.serving.secure_port)
    p.add_argument("--tls-cert-file", default="")
    p.add_argument("--tls-private-key-file", default="")
    p.add_argument(
        "--cert-dir",
        default=d.serving.cert_dir,
        help="where a self-signed serving certificate is made when --tls-cert-file is not given",
    )
    p.add_argument(
        "--cert-reload-interval",
        type=_duration,
        default=d.serving.cert_reload_interval,
        help="how often serving certificate and client CA files are checked for changes",
    )
    p.add_argument("--etcd-servers", default=",".join(d.etcd.servers), help="comma-separated etcd endpoints")
    p.add_argument("--etcd-prefix", default=d.etcd.prefix)
    p.add_argument("--etcd-cafile", default="")
    p.add_argument("--etcd-certfile", default="")
    p.add_argument("--etcd-keyfile", default="")
    p.add_argument(
        "--etcd-compaction-interval",
        type=_duration,
        default=d.etcd.compaction_interval,
        help="how often etcd history is compacted (Go duration, e.g. 5m; 0 disables)",
    )
    a = d.authn
    p.add_argument(
        "--client-ca-file", default="", help="CA that signs client certificates (CN=user, O=groups)"
    )
    p.add_argument(
        "--requestheader-client-ca-file", default="", help="CA of the front proxy's client certificate"
    )
    p.add_argument(
        "--requestheader-allowed-names", default="", help="comma-separated allowed front-proxy CNs"
    )
    p.add_argument("--requestheader-username-headers", default=",".join(a.requestheader_username_headers))
    p.add_argument("--requestheader-group-headers", default=",".join(a.requestheader_group_headers))
    p.add_argument(
        "--requestheader-extra-headers-prefix", default=",".join(a.requestheader_extra_headers_prefix)
    )
    p.add_argument(
        "--authentication-kubeconfig", default="", help="kube-apiserver for TokenReview and CA ConfigMap"
    )
    p.add_argument("--authorization-kubeconfig", default="", help="kube-apiserver for SubjectAccessReview")
    p.add_argument("--authorization-always-allow-paths", default=",".join(a.always_allow_paths))
    p.add_argument("--authorization-always-allow-groups", default=",".join(a.always_allow_groups))
    p.add_argument("--authentication-token-webhook-cache-ttl", type=_duration, default=a.token_cache_ttl)
    p.add_argument(
        "--authorization-webhook-cache-authorized-ttl", type=_duration, default=a.authz_allowed_ttl
    )
    p.add_argument(
        "--authorization-webhook-cache-unauthorized-ttl", type=_duration, default=a.authz_denied_ttl
    )
    p.add_argument("--watch-cache-size", type=int, default=d.cache.capacity)
    add_edge_flags(p, d.tunnel)
    p.add_argument("-v", "--v", dest="verbosity", type=int, default=0)


def _list(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def from_args(a: argparse.Namespace, *, in_cluster: bool = False) -> ServerOptions:
    return ServerOptions(
        serving=ServingOptions(
            a.bind_address,
            a.secure_port,
            a.tls_cert_file,
            a.tls_private_key_file,
            a.cert_dir,
            a.cert_reload_interval,
        ),
        etcd=EtcdOptions(
            _list(a.etcd_servers),
            a.etcd_prefix,
            a.etcd_cafile,
            a.etcd_certfile,
            a.etcd_keyfile,
            a.etcd_compaction_interval,
        ),
        authn=AuthnOptions(
            client_ca_file=a.client_ca_file,
            requestheader_client_ca_file=a.requestheader_client_ca_file,
            requestheader_allowed_names=_list(a.requestheader_allowed_names),
            requestheader_username_headers=_list(a.requestheader_username_headers),
            requestheader_group_headers=_list(a.requestheader_group_headers),
            requestheader_extra_headers_prefix=_list(a.requestheader_extra_headers_prefix),
            authentication_kubeconfig=a.authentication_kubeconfig,
            authorization_kubeconfig=a.authorization_kubeconfig,
            in_cluster=in_cluster,
            always_allow_paths=_list(a.authorization_always_allow_paths),
            always_allow_groups=_list(a.authorization_always_allow_groups),
            token_cache_ttl=a.authentication_token_webhook_cache_ttl,
            authz_allowed_ttl=a.authorization_webhook_cache_authorized_ttl,
            authz_denied_ttl=a.authorization_webhook_cache_unauthorized_ttl,
        ),
        cache=CacheOptions(a.watch_cache_size),
        tunnel=TunnelOptions(
            port=a.tunnel_port,
            bind_address=a.tunnel_bind_address,
            agent_ca_file=a.tunnel_agent_ca_file,
            cert_file=a.tunnel_cert_file,
            key_file=a.tunnel_private_key_file,
            allowed_ports=a.tunnel_allowed_ports,
            peers=tuple(p.strip() for p in a.tunnel_peer if p.strip()),
            advertise_address=a.tunnel_advertise_address,
            egress_uds_path=a.egress_uds_path,
            egress_port=a.egress_port,
            egress_client_ca_file=a.egress_client_ca_file,
            egress_allowed_names=_list(a.egress_allowed_names),
            egress_direct_cidrs=_list(a.egress_direct_cidrs),
            egress_direct_domains=_list(a.egress_direct_domains),
        ),
        kubelet=KubeletOptions(
            a.kubelet_client_certificate, a.kubelet_client_key, a.kubelet_certificate_authority
        ),
        controllers=controller_options(a, in_cluster=in_cluster),
        verbosity=a.verbosity,
    )
