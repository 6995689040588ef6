"""GET nodepools/{name}/topology (read-only): the pool's nodes with readiness, addresses, tunnel state,
autonomy setting and edge health verdict (docs/health.md), and the in-pool endpoints of Services
annotated `openyurt.io/topologyKeys`.

Nodes come from the shared Node informer and tunnel state from this replica's tunnel server (an agent
connected to another replica shows Disconnected here, as in edgenodes). Services and EndpointSlices are
read from kube-apiserver on each request (a diagnostic endpoint, not a hot path), each call bounded by
a timeout; if kube-apiserver does not answer, the request fails with 503 rather than showing a partial
picture.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from aggapi.apis.nodepool import NODEPOOL
from aggapi.controllers import nodes as n
from aggapi.controllers.informer import Obj
from aggapi.controllers.kubejson import KubeUnavailable, kube_request
from aggapi.controllers.nodes import NodeDirectory
from aggapi.http.handlers import respond
from aggapi.http.requestinfo import RequestInfo
from aggapi.machinery import apierrors
from aggapi.registry.store import Store

log = logging.getLogger(__name__)

TOPOLOGY_KEYS = "openyurt.io/topologyKeys"
AUTONOMY = "node.openyurt.io/autonomy-duration"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class Agents(Protocol):
    def agents(self) -> Mapping[str, Any]: ...


class PoolTopology:
    def __init__(
        self,
        nodes: NodeDirectory,
        agents: Agents | None,
        api: Any | None,
        *,
        timeout: float = 10.0,
        verdicts: Callable[[str], str] | None = None,
    ) -> None:
        self._nodes = nodes
        self._verdicts = verdicts  # a node's edge health verdict (edgenodes/{name}/health)
        self._agents = agents
        self._api = api
        self._timeout = timeout
        self._store: Store | None = None

    def bind(self, stores: Mapping[str, Store]) -> None:
        self._store = stores[NODEPOOL.resource]

    async def __call__(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        if request.method != "GET":
            raise apierrors.method_not_allowed(request.method, f"{NODEPOOL.resource}/topology")
        if self._store is None:
            raise apierrors.service_unavailable("the server is starting")
        pool = await self._store.get("", info.name)
        members = (
            [] if self._nodes.informer is None else self._nodes.informer.by_index(n.POOL_INDEX, info.name)
        )
        connected = set(self._agents.agents()) if self._agents is not None else set()
        nodes = [self.node_entry(m, connected, self._verdicts) for m in members]
        services = await self.services({x["name"] for x in nodes})
        status = pool.get("status") or {}
        body = {
            "apiVersion": NODEPOOL.api_version,
            "kind": "NodePoolTopology",
            "metadata": {"name": info.name},
            "pool": {
                "type": (pool.get("spec") or {}).get("type", ""),
                "readyNodeNum": status.get("readyNodeNum", 0),
                "unreadyNodeNum": status.get("unreadyNodeNum", 0),
            },
            "nodes": nodes,
            "services": services,
        }
        return respond(body)

    @staticmethod
    def node_entry(node: Obj, connected: set[str], verdicts: Callable[[str], str] | None = None) -> Obj:
        meta = node.get("metadata") or {}
        name = str(meta.get("name", ""))
        entry: Obj = {
            "name": name,
            "ready": n.ready_status(node),
            "addresses": list((node.get("status") or {}).get("addresses") or []),
            "tunnel": "Connected" if name in connected else "Disconnected",
        }
        if verdicts is not None:
            entry["health"] = verdicts(name)
        autonomy = (meta.get("annotations") or {}).get(AUTONOMY)
        if autonomy is not None:
            entry["autonomyDuration"] = str(autonomy)
        return entry

    async def services(self, members: set[str]) -> list[Obj]:
        if self._api is None or not members:
            return []
        listed = await self._get("/api/v1/services")
        out = []
        for svc in listed.get("items") or []:
            meta = svc.get("metadata") or {}
            keys = (meta.get("annotations") or {}).get(TOPOLOGY_KEYS)
            if not keys:
                continue
            ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
            slices = await self._get(
                f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                [("labelSelector", f"{SERVICE_NAME_LABEL}={name}")],
            )
            endpoints = []
            for sl in slices.get("items") or []:
                for ep in sl.get("endpoints") or []:
                    if ep.get("nodeName") in members:
                        ready = (ep.get("conditions") or {}).get("ready")
                        endpoints.append(
                            {
                                "addresses": list(ep.get("addresses") or []),
                                "nodeName": ep["nodeName"],
                                "ready": ready is not False,  # unset means ready (discovery/v1)
                            }
                        )
            out.append({"namespace": ns, "name": name, "topologyKeys": str(keys), "endpoints": endpoints})
        return out

    async def _get(self, path: str, query: list[tuple[str, str]] | None = None) -> Obj:
        try:
            ans = await kube_request(self._api, "GET", path, query=query, timeout=self._timeout)
        except KubeUnavailable as exc:
            raise apierrors.service_unavailable(f"topology: kube-apiserver: {exc}") from exc
        if not ans.ok:
            raise apierrors.service_unavailable(f"topology: GET {path}: {ans.status} {ans.message}")
        return ans.body
