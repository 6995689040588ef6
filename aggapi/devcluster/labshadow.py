"""The shadow-apiserver of each lab node (docs/shadow.md): `aggapi-edge shadow` on the node's own
address (`<address>:10261` HTTP, `:10268` HTTPS with the node's kubelet serving certificate, `:10267`
health and metrics), whose upstream is the node's cloud link (its relay to the devcluster, so `aggapi dev
cut <node>` takes the shadow offline) with the node's client certificate. The node's kubelet-sim
heartbeats through it and list+watches through it like a kubelet and a kube-proxy (`api-view.json`), so
a cut node keeps its Node status and Lease locally and its view of the API from the shadow's disk
cache (`<dir>/nodes/<node>/shadow`)."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

from aggapi.devcluster.labkit import Child, wait_for
from aggapi.devcluster.labnodes import SHADOW_PORT as HTTP_PORT
from aggapi.devcluster.labnodes import EdgeNode, LabNodes
from aggapi.devcluster.pki import DevclusterPKI

HEALTH_PORT = 10267
SECURE_PORT = 10268


def shadow_url(node: EdgeNode) -> str:
    return f"http://{node.address}:{HTTP_PORT}"


def api_view_file(edge: LabNodes, node: EdgeNode) -> Path:
    return edge.state / "nodes" / node.name / "api-view.json"


def shadow_args(edge: LabNodes, node: EdgeNode, probe_period: str) -> list[str]:
    d = edge.state / "nodes" / node.name
    return [
        sys.executable,
        "-m",
        "edge",
        "shadow",
        f"--node-name={node.name}",
        f"--server={edge.link(node)}",
        f"--server-ca-file={DevclusterPKI(edge.pki_dir).ca}",
        f"--node-cert-file={d / 'heartbeat.crt'}",
        f"--node-key-file={d / 'heartbeat.key'}",
        f"--cache-dir={d / 'shadow'}",
        f"--bind-address={node.address}",
        f"--port={HTTP_PORT}",
        f"--secure-port={SECURE_PORT}",
        # The HTTPS port on the node's address, which the masterservice filter gives pods as the
        # `kubernetes` Service (a real node uses a dummy interface with 169.254.2.1, docs/shadow.md).
        f"--secure-bind-address={node.address}",
        f"--master-service-host={node.address}",
        f"--tls-cert-file={d / 'kubelet.crt'}",
        f"--tls-private-key-file={d / 'kubelet.key'}",
        f"--health-port={HEALTH_PORT}",
        f"--probe-period={probe_period}",
        # the default components, and the lab's sample in-cluster client (its reads are cached apart,
        # under its token: docs/shadow.md)
        "--cache-agents=kubelet,kube-proxy,coredns,flanneld,aggapi-edge,sample-app",
    ]


def start_shadow(edge: LabNodes, node: EdgeNode, probe_period: str, timeout: float = 30) -> Child:
    child = edge.start_child(f"shadow-{node.name}", shadow_args(edge, node, probe_period))
    url = f"http://{node.address}:{HEALTH_PORT}/readyz"

    def ready() -> bool | None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200 or None
        except (urllib.error.URLError, OSError):
            return None

    wait_for(f"shadow of {node.name} ready", ready, timeout=timeout, alive=[child])
    return child
