"""The devcluster's configuration (kept free of heavy imports: the CLI parser is built from it)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DevclusterOptions:
    bind_address: str = "127.0.0.1"
    secure_port: int = 6443
    etcd_servers: tuple[str, ...] = ("http://127.0.0.1:2379",)
    etcd_prefix: str = "/devcluster"
    pki_dir: str = ".devcluster/pki"
    token_auth_file: str = ""
    authorization_policy_file: str = ""
    apiservice_check_interval: float = 5.0

    def validate(self) -> list[str]:
        errs = []
        try:
            if not ipaddress.ip_address(self.bind_address).is_loopback:
                errs.append(f"--bind-address {self.bind_address}: the devcluster listens on loopback only")
        except ValueError:
            errs.append(f"--bind-address {self.bind_address!r} is not an IP address")
        for flag, f in (
            ("--token-auth-file", self.token_auth_file),
            ("--authorization-policy-file", self.authorization_policy_file),
        ):
            if f and not Path(f).is_file():
                errs.append(f"{flag} {f}: no such file")
        if self.apiservice_check_interval <= 0:
            errs.append("--apiservice-check-interval must be positive")
        return errs
