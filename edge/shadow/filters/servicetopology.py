"""servicetopology: keep a Service's traffic inside this node's host, NodePool or zone.

For a Service annotated `openyurt.io/topologyKeys`, the EndpointSlices (discovery.k8s.io/v1) and
Endpoints (v1; older coredns and kube-proxy read them, and YurtHub filters both) served to kube-proxy
and coredns keep only the endpoints on this node / in its pool / in its zone. Decisions (see
docs/shadow-filters.md):

- The annotation is a single key or a comma-separated preference list ("*" = anywhere): the first key
  that leaves an endpoint wins; none does → an empty endpoint list (as YurtHub: no silent fallback to
  remote endpoints). With EndpointSlices the choice is made per slice.
- Fail open: if this node's pool or zone cannot be determined (not cached yet, or labelled into a pool
  that does not exist), or the Service is not known, the object passes unchanged and a warning is
  logged once. Dropping every endpoint on missing metadata would turn a cache gap into an outage.
- An endpoint without nodeName is dropped under a host or pool key (we cannot place it); under a zone
  key its own `zone` field is enough.
- Pool membership of an endpoint's node: its `apps.openyurt.io/nodepool` label if the Node is known
  (the label is the truth), else the NodePool's status.nodes (what aggapi's controller maintains; edge
  nodes normally see only their own Node). A node known to neither is not a member.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge.shadow.filters.base import (
    READ_VERBS,
    FilterRequest,
    LogOnce,
    Obj,
    annotations_of,
    component_matches,
    is_status,
    labels_of,
    meta,
)
from edge.shadow.filters.config import SERVICE_TOPOLOGY
from edge.shadow.filters.topology import TopologySource

log = logging.getLogger(__name__)

TOPOLOGY_ANNOTATION = "openyurt.io/topologyKeys"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
NODEPOOL_LABEL = "apps.openyurt.io/nodepool"
ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")

HOST, POOL, ZONE, ANY = "host", "pool", "zone", "*"

ENDPOINTSLICES = ("discovery.k8s.io", "v1", "endpointslices")
ENDPOINTS = ("", "v1", "endpoints")

Keep = Callable[[Any, Any], bool]  # (endpoint nodeName, endpoint zone) -> keep it
Cut = Callable[[list[Any], Keep], list[Any]]  # the items of a field that one key keeps


class ServiceTopologyFilter:
    name = SERVICE_TOPOLOGY

    def __init__(
        self,
        node_name: str,
        topology: TopologySource,
        *,
        components: frozenset[str] = frozenset({"kube-proxy", "coredns"}),
        zone_key_is_nodepool: bool = True,
    ) -> None:
        self.node_name = node_name
        self.topology = topology
        self.components = components
        self.keys: dict[str, str] = {
            "kubernetes.io/hostname": HOST,
            "openyurt.io/nodepool": POOL,
            "kubernetes.io/zone": POOL if zone_key_is_nodepool else ZONE,
            "topology.kubernetes.io/zone": ZONE,
            "*": ANY,
        }
        self._warn = LogOnce(log)

    def wants(self, req: FilterRequest) -> bool:
        return (
            req.verb in READ_VERBS
            and (req.group, req.version, req.resource) in (ENDPOINTSLICES, ENDPOINTS)
            and component_matches(self.components, req.component)
        )

    def apply(self, req: FilterRequest, obj: dict[str, Any]) -> dict[str, Any] | None:
        if is_status(obj):
            return obj
        is_slice = (req.group, req.version, req.resource) == ENDPOINTSLICES
        m = meta(obj)
        namespace = m.get("namespace") or req.namespace
        # A slice names its Service in a label; Endpoints share the Service's name.
        service = labels_of(obj).get(SERVICE_NAME_LABEL) if is_slice else m.get("name")
        if not isinstance(namespace, str) or not isinstance(service, str) or not service:
            return obj
        keys = self._keys(namespace, service)
        if not keys:
            return obj
        if is_slice:
            return self._narrow(obj, keys, f"{namespace}/{service}", "endpoints", _cut_endpoints)
        return self._narrow(obj, keys, f"{namespace}/{service}", "subsets", _cut_subsets)

    def _keys(self, namespace: str, service: str) -> list[str]:
        svc = self.topology.service(namespace, service)
        if svc is None:  # not cached yet: we cannot know whether it asks for topology
            log.debug("servicetopology: service %s/%s unknown, not filtering", namespace, service)
            return []
        raw = annotations_of(svc).get(TOPOLOGY_ANNOTATION)
        if not isinstance(raw, str):
            return []
        out: list[str] = []
        for token in (t.strip() for t in raw.split(",")):
            if not token:
                continue
            if token in self.keys:
                out.append(self.keys[token])
            else:
                self._warn.warning(
                    f"servicetopology: service {namespace}/{service}: unknown topology key {token!r} ignored"
                )
        return out

    def _narrow(self, obj: Obj, keys: list[str], svc: str, field: str, cut: Cut) -> Obj:
        """`obj` with `field` cut to the first topology key (in preference order) that leaves something;
        unchanged for `*` or a key this node cannot place itself by (fail open); emptied otherwise."""
        items = obj.get(field)
        items = items if isinstance(items, list) else []
        for key in keys:
            if key == ANY:
                return obj
            keep = self._matcher(key, svc)
            if keep is None:
                return obj
            kept = cut(items, keep)
            if kept:
                return {**obj, field: kept}
        return {**obj, field: []}

    def _matcher(self, key: str, svc: str) -> Keep | None:
        """A predicate (nodeName, zone) -> keep for a host/pool/zone key; None if this node's place is
        unknown (the caller then passes the object unchanged)."""
        if key == HOST:
            me = self.node_name
            return lambda node, _zone: node == me
        if key == POOL:
            pool = self._own_pool()
            if pool is None:
                self._warn.warning(
                    f"servicetopology: pool of node {self.node_name} unknown; "
                    f"not filtering pool-scoped services (first: {svc})"
                )
                return None
            return self._pool_member(pool)
        zone = _zone_of(self.topology.node(self.node_name))
        if zone is None:
            self._warn.warning(
                f"servicetopology: zone of node {self.node_name} unknown; "
                f"not filtering zone-scoped services (first: {svc})"
            )
            return None

        def same_zone(node: Any, ep_zone: Any) -> bool:
            if isinstance(ep_zone, str) and ep_zone:
                return ep_zone == zone
            return isinstance(node, str) and _zone_of(self.topology.node(node)) == zone

        return same_zone

    def _own_pool(self) -> str | None:
        """This node's pool, if both the pool name and the NodePool object are known."""
        name = labels_of(self.topology.node(self.node_name)).get(NODEPOOL_LABEL)
        if not (isinstance(name, str) and name):
            # Own Node not cached (yet): a pool listing this node in status.nodes says where it is.
            name = next((meta(p).get("name") for p in self.topology.nodepools() if self._listed_in(p)), None)
        if not (isinstance(name, str) and name) or self.topology.nodepool(name) is None:
            return None
        return name

    def _listed_in(self, pool: Obj) -> bool:
        return self.node_name in _status_nodes(pool)

    def _pool_member(self, pool: str) -> Keep:
        np = self.topology.nodepool(pool)
        members = _status_nodes(np) if np is not None else frozenset()

        def member(node: Any, _zone: Any) -> bool:
            if not isinstance(node, str) or not node:
                return False
            if node == self.node_name:
                return True
            n = self.topology.node(node)
            if n is not None:
                return labels_of(n).get(NODEPOOL_LABEL) == pool
            return node in members

        return member


def _cut_endpoints(eps: list[Any], keep: Keep) -> list[Any]:
    """EndpointSlice endpoints."""
    return [ep for ep in eps if isinstance(ep, dict) and keep(ep.get("nodeName"), ep.get("zone"))]


def _cut_subsets(subsets: list[Any], keep: Keep) -> list[Any]:
    """Endpoints subsets; a subset left with no address goes."""
    return [s for s in (_cut_subset(s, keep) for s in subsets) if s is not None]


def _cut_subset(subset: Any, keep: Keep) -> Obj | None:
    """An Endpoints subset with only the addresses `keep` accepts; None when nothing is left (the API
    never has a subset without addresses). Endpoints addresses carry no zone: the node's label decides."""
    if not isinstance(subset, dict):
        return None
    out: Obj = dict(subset)
    for field in ("addresses", "notReadyAddresses"):
        addrs = subset.get(field)
        if isinstance(addrs, list):
            kept = [a for a in addrs if isinstance(a, dict) and keep(a.get("nodeName"), None)]
            if kept:
                out[field] = kept
            else:
                out.pop(field, None)
    if not out.get("addresses") and not out.get("notReadyAddresses"):
        return None
    return out


def _status_nodes(pool: Obj | None) -> frozenset[str]:
    status = pool.get("status") if pool is not None else None
    nodes = status.get("nodes") if isinstance(status, dict) else None
    return frozenset(n for n in nodes if isinstance(n, str)) if isinstance(nodes, list) else frozenset()


def _zone_of(node: Obj | None) -> str | None:
    lbl = labels_of(node)
    for key in ZONE_LABELS:
        z = lbl.get(key)
        if isinstance(z, str) and z:
            return z
    return None
