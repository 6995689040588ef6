"""Realistic objects for the shadow filter tests, and a small aiohttp KubeReader for the devcluster.

The cluster: two edge pools with two zones crossing them, and a cloud node in no pool.

    node      pool       zone     endpoint IP
    edge-a1   hangzhou   zone-1   10.0.1.1   <- the shadow's own node
    edge-a2   hangzhou   zone-2   10.0.1.2
    edge-b1   beijing    zone-1   10.0.2.1
    edge-b2   beijing    zone-2   10.0.2.2
    cloud-1   -          zone-1   10.0.9.1
    (none)    -          -        10.0.9.9   (an endpoint without nodeName, e.g. a manual one)
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from edge.shadow.filters import FilterRequest, TopologyIndex

ME = "edge-a1"
POOL_LABEL = "apps.openyurt.io/nodepool"
ZONE_LABEL = "topology.kubernetes.io/zone"

NODES = {
    "edge-a1": ("hangzhou", "zone-1", "10.0.1.1"),
    "edge-a2": ("hangzhou", "zone-2", "10.0.1.2"),
    "edge-b1": ("beijing", "zone-1", "10.0.2.1"),
    "edge-b2": ("beijing", "zone-2", "10.0.2.2"),
    "cloud-1": (None, "zone-1", "10.0.9.1"),
}
ALL_IPS = {ip for _, _, ip in NODES.values()} | {"10.0.9.9"}


def node(name: str, pool: str | None = None, zone: str | None = None) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if pool:
        labels[POOL_LABEL] = pool
    if zone:
        labels[ZONE_LABEL] = zone
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "resourceVersion": "100"},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "images": [{"names": ["pause"]}]},
    }


def cluster_node(name: str) -> dict[str, Any]:
    pool, zone, _ = NODES[name]
    return node(name, pool, zone)


def nodepool(name: str, nodes: list[str] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "edge.aggapi.io/v1alpha1",
        "kind": "NodePool",
        "metadata": {"name": name, "labels": {"nodepool.openyurt.io/type": "edge"}},
        "spec": {"type": "Edge"},
    }
    if nodes is not None:
        obj["status"] = {"readyNodeNum": len(nodes), "unreadyNodeNum": 0, "nodes": nodes}
    return obj


def service(name: str, topology_keys: str | None, namespace: str = "shop") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {"app": name}}
    if topology_keys is not None:
        meta["annotations"] = {"openyurt.io/topologyKeys": topology_keys}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.10.10",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }


def _ep(ip: str, node_name: str | None, zone: str | None) -> dict[str, Any]:
    ep: dict[str, Any] = {
        "addresses": [ip],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "targetRef": {"kind": "Pod", "namespace": "shop", "name": f"web-{ip.replace('.', '-')}"},
    }
    if node_name:
        ep["nodeName"] = node_name
    if zone:
        ep["zone"] = zone
    return ep


def endpointslice(svc: str = "web", *, with_zone: bool = True, namespace: str = "shop") -> dict[str, Any]:
    """What the EndpointSlice controller writes: nodeName and (from the node's label) zone per endpoint."""
    eps = [_ep(ip, n, zone if with_zone else None) for n, (_, zone, ip) in NODES.items()]
    eps.append(_ep("10.0.9.9", None, None))
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{svc}-x7k2p",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": svc, "endpointslice.kubernetes.io/managed-by": "x"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc, "uid": "u1"}],
        },
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def endpoints(svc: str = "web", namespace: str = "shop") -> dict[str, Any]:
    """Core v1 Endpoints: a ready subset and a subset that has only not-ready addresses."""

    def addr(n: str) -> dict[str, Any]:
        return {"ip": NODES[n][2], "nodeName": n, "targetRef": {"kind": "Pod", "name": f"p-{n}"}}

    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": svc, "namespace": namespace},
        "subsets": [
            {
                "addresses": [addr("edge-a1"), addr("edge-b1"), {"ip": "10.0.9.9"}],
                "notReadyAddresses": [addr("edge-a2")],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            },
            {
                "notReadyAddresses": [addr("edge-b2")],
                "ports": [{"name": "metrics", "port": 9090, "protocol": "TCP"}],
            },
        ],
    }


def slice_ips(obj: dict[str, Any]) -> set[str]:
    return {a for ep in obj["endpoints"] for a in ep["addresses"]}


def subset_ips(obj: dict[str, Any]) -> list[tuple[set[str], set[str]]]:
    return [
        ({a["ip"] for a in s.get("addresses", [])}, {a["ip"] for a in s.get("notReadyAddresses", [])})
        for s in obj["subsets"]
    ]


def request(
    resource: str = "endpointslices", component: str = "kube-proxy", verb: str = "list"
) -> FilterRequest:
    group, version = {
        "endpointslices": ("discovery.k8s.io", "v1"),
        "endpoints": ("", "v1"),
        "services": ("", "v1"),
    }[resource]
    return FilterRequest(component, verb, group, version, resource, None, None)


def full_index(
    *, all_nodes: bool = True, topology_keys: str | None = "openyurt.io/nodepool", with_pools: bool = True
) -> TopologyIndex:
    """What the shadow of edge-a1 knows. An edge node usually caches only its own Node (all_nodes=False)."""
    index = TopologyIndex()
    for n in NODES if all_nodes else [ME]:
        index.upsert("Node", cluster_node(n))
    if with_pools:
        index.upsert("NodePool", nodepool("hangzhou", ["edge-a1", "edge-a2"]))
        index.upsert("NodePool", nodepool("beijing", ["edge-b1", "edge-b2"]))
    index.upsert("Service", service("web", topology_keys))
    return index


class HTTPReader:
    """KubeReader over aiohttp with a client certificate (tests only; the proxy brings its own)."""

    def __init__(self, base: str, ca: Path, cert: Path, key: str | Path, *, watch_seconds: int = 30) -> None:
        self.base = base.rstrip("/")
        self.ssl = ssl.create_default_context(cafile=str(ca))
        self.ssl.load_cert_chain(str(cert), str(key))
        self.watch_seconds = watch_seconds
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HTTPReader:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_connect=5, sock_read=60))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    def _url(self, path: str, **params: str) -> str:
        sep = "&" if "?" in path else "?"
        return (
            self.base
            + path
            + (sep + "&".join(f"{k}={quote(v)}" for k, v in params.items()) if params else "")
        )

    async def list(self, path: str) -> tuple[list[dict[str, Any]], str]:
        assert self.session is not None
        async with asyncio.timeout(10):
            async with self.session.get(self._url(path), ssl=self.ssl) as r:
                body = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"list {path}: {r.status} {body.get('message')}")
        return body.get("items") or [], body["metadata"]["resourceVersion"]

    async def watch(self, path: str, rv: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        assert self.session is not None
        url = self._url(
            path,
            watch="1",
            resourceVersion=rv,
            allowWatchBookmarks="true",
            timeoutSeconds=str(self.watch_seconds),
        )
        async with asyncio.timeout(10):
            resp = await self.session.get(url, ssl=self.ssl)
        try:
            if resp.status != 200:
                raise RuntimeError(f"watch {path}: {resp.status}")
            async for line in resp.content:  # one JSON event per line; the feeder bounds idle time
                if line.strip():
                    ev = json.loads(line)
                    yield ev["type"], ev["object"]
        finally:
            resp.release()
