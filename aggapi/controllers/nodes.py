"""Nodes as aggapi needs them, from one informer on kube-apiserver's /api/v1/nodes.

`NodeDirectory` answers the tunnel's identity check (`addresses(node)`: what the Node's status.addresses
say, None for an unknown node), finds a node's kubelet (InternalIP and the kubelet port it reports), and
says which nodes are edge nodes. Without a kube-apiserver connection it knows no node at all, so the tunnel
refuses every agent rather than trusting addresses it cannot check.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aggapi.controllers.informer import Informer, InformerConfig, Obj
from aggapi.controllers.kube import KubeListWatcher, ListWatchConfig

log = logging.getLogger(__name__)

EDGE_WORKER_LABEL = "openyurt.io/is-edge-worker"
NODEPOOL_LABEL = "apps.openyurt.io/nodepool"
DEFAULT_KUBELET_PORT = 10250
ADDRESS_INDEX = "address"
POOL_INDEX = "pool"  # apps.openyurt.io/nodepool value → nodes


def canonical_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address.lower()


def slim(node: Obj) -> Obj:
    """What aggapi keeps of a Node (an informer transform): names, labels, annotations and taints (the
    NodePool controller pushes and reads them), addresses, the kubelet port and the Ready condition's
    status. Images, capacity and heartbeat times would cost memory per node and change every few seconds
    without changing anything aggapi shows or does."""
    meta = node.get("metadata") or {}
    status = node.get("status") or {}
    ready = [
        {k: c[k] for k in ("type", "status", "reason", "message", "lastTransitionTime") if k in c}
        for c in status.get("conditions") or []
        if isinstance(c, dict) and c.get("type") == "Ready"
    ]
    keep = ("name", "uid", "resourceVersion", "creationTimestamp", "labels", "annotations")
    taints = [t for t in (node.get("spec") or {}).get("taints") or [] if isinstance(t, dict)]
    return {
        "metadata": {k: meta[k] for k in keep if k in meta},
        "spec": {"taints": taints} if taints else {},
        "status": {
            "addresses": [a for a in status.get("addresses") or [] if isinstance(a, dict)],
            "daemonEndpoints": status.get("daemonEndpoints") or {},
            "conditions": ready,
        },
    }


def labels(node: Obj) -> dict[str, str]:
    return dict((node.get("metadata") or {}).get("labels") or {})


def is_edge_node(node: Obj) -> bool:
    """OpenYurt's marks: `openyurt.io/is-edge-worker=true`, or membership of a NodePool."""
    lbl = labels(node)
    return lbl.get(EDGE_WORKER_LABEL) == "true" or NODEPOOL_LABEL in lbl


def pool_of(node: Obj) -> str:
    return labels(node).get(NODEPOOL_LABEL, "")


def addresses(node: Obj) -> list[str]:
    """status.addresses[*].address (InternalIP, ExternalIP, Hostname, ...), in the Node's order."""
    out = []
    for a in (node.get("status") or {}).get("addresses") or []:
        value = str(a.get("address") or "")
        if value and value not in out:
            out.append(value)
    return out


def internal_ip(node: Obj) -> str | None:
    for a in (node.get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP" and a.get("address"):
            return str(a["address"])
    return None


def kubelet_port(node: Obj) -> int:
    endpoint = ((node.get("status") or {}).get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}
    port = endpoint.get("Port")
    return int(port) if isinstance(port, int) and 0 < port < 65536 else DEFAULT_KUBELET_PORT


def ready_status(node: Obj) -> str:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("status") or "Unknown")
    return "Unknown"


@dataclass(frozen=True, slots=True)
class KubeletEndpoint:
    node: str
    address: str  # the InternalIP: what the kubelet's serving certificate is checked against
    port: int


def _address_index(node: Obj) -> list[str]:
    return [canonical_address(a) for a in addresses(node)]


def _pool_index(node: Obj) -> list[str]:
    pool = pool_of(node)
    return [pool] if pool else []


def node_informer(api: Any, *, path: str = "/api/v1/nodes", **informer_kw: Any) -> Informer:
    """An informer over all Nodes (edge or not: any node's agent is checked against its Node)."""
    return Informer(
        KubeListWatcher(api, ListWatchConfig(path)),
        InformerConfig("nodes"),
        indexers={ADDRESS_INDEX: _address_index, POOL_INDEX: _pool_index},
        transform=slim,
        **informer_kw,
    )


class NodeDirectory:
    """The tunnel's NodeAddresses, and node lookups for edgenodes and the egress."""

    def __init__(
        self,
        informer: Informer | None,
        *,
        why_none: str = "aggapi has no kube-apiserver connection (--kubeconfig, or in-cluster)",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.informer = informer
        self._why_none = why_none
        self._now = monotonic
        self._warned: dict[str, float] = {}

    async def addresses(self, node: str) -> set[str] | None:
        if self.informer is None:
            self._refusal(node)
            return None
        await self.informer.wait_synced()  # the tunnel bounds this wait (node_lookup_timeout)
        obj = self.informer.get(node)
        return None if obj is None else set(addresses(obj))

    def _refusal(self, node: str) -> None:
        now = self._now()
        if now - self._warned.get(node, -1e9) >= 60:  # once a minute per node, not per reconnect
            self._warned[node] = now
            if len(self._warned) > 10_000:
                self._warned.clear()
            log.warning(
                "refusing the tunnel agent of node %s: %s, so its addresses cannot be checked against its "
                "Node object",
                node,
                self._why_none,
            )

    @property
    def synced(self) -> bool:
        return self.informer is None or self.informer.has_synced

    def get(self, name: str) -> Obj | None:
        return None if self.informer is None else self.informer.get(name)

    def by_address(self, address: str) -> list[Obj]:
        if self.informer is None:
            return []
        return self.informer.by_index(ADDRESS_INDEX, canonical_address(address))

    def kubelet_endpoint(self, name: str) -> KubeletEndpoint | None:
        node = self.get(name)
        if node is None:
            return None
        ip = internal_ip(node)
        return None if ip is None else KubeletEndpoint(name, ip, kubelet_port(node))
