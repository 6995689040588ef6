"""The devcluster's configuration (kept free of heavy imports: the CLI parser is built from it)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

# kube's default --kubelet-preferred-address-types starts with Hostname; the devcluster prefers the
# InternalIP (what most clusters configure, and what the tunnel's agents announce).
ADDRESS_TYPES = ("InternalIP", "Hostname", "InternalDNS", "ExternalDNS", "ExternalIP")


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
    # Kubelet traffic (nodes/proxy, pods/log|exec|attach|portforward): only through this egress.
    egress_selector_config_file: str = ""
    kubelet_client_certificate: str = ""
    kubelet_client_key: str = ""
    kubelet_certificate_authority: str = ""
    kubelet_preferred_address_types: tuple[str, ...] = ADDRESS_TYPES
    # The node lifecycle stand-in (nodelifecycle.py), kube-controller-manager's flags and defaults.
    node_monitor_grace_period: float = 40.0
    node_monitor_period: float = 5.0

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
            ("--egress-selector-config-file", self.egress_selector_config_file),
            ("--kubelet-client-certificate", self.kubelet_client_certificate),
            ("--kubelet-client-key", self.kubelet_client_key),
            ("--kubelet-certificate-authority", self.kubelet_certificate_authority),
        ):
            if f and not Path(f).is_file():
                errs.append(f"{flag} {f}: no such file")
        if bool(self.kubelet_client_certificate) != bool(self.kubelet_client_key):
            errs.append("--kubelet-client-certificate and --kubelet-client-key go together")
        unknown = set(self.kubelet_preferred_address_types) - set(ADDRESS_TYPES)
        if unknown or not self.kubelet_preferred_address_types:
            errs.append(f"--kubelet-preferred-address-types: want a list of {', '.join(ADDRESS_TYPES)}")
        if self.egress_selector_config_file and Path(self.egress_selector_config_file).is_file():
            from aggapi.devcluster.egress import load_egress_selector

            try:
                load_egress_selector(self.egress_selector_config_file)
            except (ValueError, OSError) as exc:
                errs.append(f"--egress-selector-config-file {self.egress_selector_config_file}: {exc}")
        if self.node_monitor_grace_period <= 0 or self.node_monitor_period <= 0:
            errs.append("--node-monitor-grace-period and --node-monitor-period must be positive")
        if self.apiservice_check_interval <= 0:
            errs.append("--apiservice-check-interval must be positive")
        return errs
