"""Object filters of the shadow-apiserver: pure pieces the proxy is given (the contract types live in
`base`). See docs/shadow-filters.md."""

from __future__ import annotations

from edge.shadow.filters.base import (
    ANY_COMPONENT,
    READ_VERBS,
    FilterRequest,
    ObjectFilter,
    apply_all,
    component_matches,
    selected,
)
from edge.shadow.filters.config import MASTER_SERVICE, SERVICE_TOPOLOGY, FiltersConfig
from edge.shadow.filters.masterservice import MasterServiceFilter
from edge.shadow.filters.servicetopology import ServiceTopologyFilter
from edge.shadow.filters.topology import KubeReader, TopologyFeeder, TopologyIndex, TopologySource


def build_filters(cfg: FiltersConfig, topology: TopologySource) -> list[ObjectFilter]:
    """The enabled filters, in a fixed order. Raises ValueError when `cfg` is invalid."""
    errors = cfg.validate()
    if errors:
        raise ValueError("; ".join(errors))
    out: list[ObjectFilter] = []
    if SERVICE_TOPOLOGY in cfg.enabled:
        out.append(
            ServiceTopologyFilter(
                cfg.node_name,
                topology,
                components=cfg.servicetopology_components,
                zone_key_is_nodepool=cfg.zone_key_is_nodepool,
            )
        )
    if MASTER_SERVICE in cfg.enabled:
        out.append(
            MasterServiceFilter(cfg.master_host, cfg.master_port, components=cfg.masterservice_components)
        )
    return out


__all__ = [
    "ANY_COMPONENT",
    "READ_VERBS",
    "FilterRequest",
    "FiltersConfig",
    "KubeReader",
    "MasterServiceFilter",
    "ObjectFilter",
    "ServiceTopologyFilter",
    "TopologyFeeder",
    "TopologyIndex",
    "TopologySource",
    "apply_all",
    "build_filters",
    "component_matches",
    "selected",
]
