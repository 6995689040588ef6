"""masterservice: point pods at the shadow instead of kube-apiserver.

kubelet turns the `default/kubernetes` Service into every pod's KUBERNETES_SERVICE_HOST/PORT (and the
in-cluster client config reads those). Served as-is, pods talk to kube-apiserver's service address and
fail while the node is offline; rewritten to the shadow's advertised address and secure port, in-cluster
clients keep working from the shadow's cache. Same rewrite as YurtHub's masterservice filter.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from edge.shadow.filters.base import READ_VERBS, FilterRequest, Obj, component_matches, is_status, meta
from edge.shadow.filters.config import MASTER_SERVICE

NAMESPACE, NAME, PORT_NAME = "default", "kubernetes", "https"


class MasterServiceFilter:
    name = MASTER_SERVICE

    def __init__(self, host: str, port: int, *, components: frozenset[str] = frozenset({"kubelet"})) -> None:
        self.host = host
        self.port = port
        self.components = components
        self._family = "IPv6" if ipaddress.ip_address(host).version == 6 else "IPv4"

    def wants(self, req: FilterRequest) -> bool:
        return (
            req.verb in READ_VERBS
            and (req.group, req.version, req.resource) == ("", "v1", "services")
            and req.namespace in (None, NAMESPACE)  # a list in another namespace cannot contain it
            and req.name in (None, NAME)
            and component_matches(self.components, req.component)
        )

    def apply(self, req: FilterRequest, obj: dict[str, Any]) -> dict[str, Any] | None:
        m = meta(obj)
        if is_status(obj) or m.get("namespace") != NAMESPACE or m.get("name") != NAME:
            return obj
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return obj
        new_spec: dict[str, Any] = {**spec, "clusterIP": self.host, "clusterIPs": [self.host]}
        # One address now, so the service is single-stack in that address's family.
        if "ipFamilies" in spec:
            new_spec["ipFamilies"] = [self._family]
        if "ipFamilyPolicy" in spec:
            new_spec["ipFamilyPolicy"] = "SingleStack"
        ports = spec.get("ports")
        if isinstance(ports, list):
            new_spec["ports"] = [self._port(p) for p in ports]
        out: Obj = {**obj, "spec": new_spec}
        return out

    def _port(self, p: Any) -> Any:
        if isinstance(p, dict) and p.get("name") == PORT_NAME:
            return {**p, "port": self.port}
        return p
