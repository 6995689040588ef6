"""Configuration of the shadow's object filters (passed in; see docs/shadow-filters.md)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

SERVICE_TOPOLOGY = "servicetopology"
MASTER_SERVICE = "masterservice"
KNOWN_FILTERS = frozenset({SERVICE_TOPOLOGY, MASTER_SERVICE})

# YurtHub's defaults: the address is put on a dummy interface of the host so that pods (in their own
# network namespace) can reach the shadow; 127.0.0.1 would be the pod's own loopback.
DEFAULT_MASTER_HOST = "169.254.2.1"
DEFAULT_MASTER_PORT = 10268


@dataclass(frozen=True, slots=True)
class FiltersConfig:
    node_name: str  # this edge node: whose host/pool/zone servicetopology keeps
    enabled: frozenset[str] = KNOWN_FILTERS
    # Who gets filtered responses ("*" = every client). kube-proxy and coredns turn EndpointSlices into
    # traffic; kubelet turns the `kubernetes` Service into pods' KUBERNETES_SERVICE_HOST/PORT.
    servicetopology_components: frozenset[str] = frozenset({"kube-proxy", "coredns"})
    masterservice_components: frozenset[str] = frozenset({"kubelet"})
    master_host: str = DEFAULT_MASTER_HOST  # the shadow's address as pods see it
    master_port: int = DEFAULT_MASTER_PORT  # the shadow's secure port
    # OpenYurt treats `openyurt.io/topologyKeys: kubernetes.io/zone` as "same NodePool"; existing
    # OpenYurt users rely on that. False = the real zone (topology.kubernetes.io/zone).
    zone_key_is_nodepool: bool = True

    def validate(self) -> list[str]:
        errs: list[str] = []
        unknown = sorted(self.enabled - KNOWN_FILTERS)
        if unknown:
            errs.append(f"unknown filters {unknown}; known: {sorted(KNOWN_FILTERS)}")
        if SERVICE_TOPOLOGY in self.enabled and not self.node_name:
            errs.append("servicetopology needs the node name")
        if MASTER_SERVICE in self.enabled:
            try:
                ipaddress.ip_address(self.master_host)
            except ValueError:
                errs.append(f"master host {self.master_host!r} is not an IP address (it becomes a clusterIP)")
            if not 0 < self.master_port < 65536:
                errs.append(f"master port {self.master_port} out of range")
        return errs
