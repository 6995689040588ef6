"""`aggapi serve` configuration: one frozen dataclass per concern; flag names follow kube's apiserver."""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass, field

from aggapi.machinery.validation import parse_go_duration


@dataclass(frozen=True, slots=True)
class ServingOptions:
    bind_address: str = "0.0.0.0"
    secure_port: int = 6443
    tls_cert_file: str = ""
    tls_private_key_file: str = ""
    cert_dir: str = "apiserver.local.config/certificates"

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
    client_ca_file: str = ""

    def validate(self) -> list[str]:
        if self.client_ca_file and not os.path.isfile(self.client_ca_file):
            return [f"--client-ca-file {self.client_ca_file}: no such file"]
        return []


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
    verbosity: int = 0

    def validate(self) -> list[str]:
        return self.serving.validate() + self.etcd.validate() + self.authn.validate() + self.cache.validate()


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
    p.add_argument(
        "--client-ca-file", default="", help="CA bundle that signs client certificates (CN=user, O=groups)"
    )
    p.add_argument("--watch-cache-size", type=int, default=d.cache.capacity)
    p.add_argument("-v", "--v", dest="verbosity", type=int, default=0)


def from_args(a: argparse.Namespace) -> ServerOptions:
    return ServerOptions(
        serving=ServingOptions(
            a.bind_address, a.secure_port, a.tls_cert_file, a.tls_private_key_file, a.cert_dir
        ),
        etcd=EtcdOptions(
            tuple(s.strip() for s in a.etcd_servers.split(",") if s.strip()),
            a.etcd_prefix,
            a.etcd_cafile,
            a.etcd_certfile,
            a.etcd_keyfile,
            a.etcd_compaction_interval,
        ),
        authn=AuthnOptions(a.client_ca_file),
        cache=CacheOptions(a.watch_cache_size),
        verbosity=a.verbosity,
    )
