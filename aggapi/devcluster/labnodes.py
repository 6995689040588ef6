"""Simulated edge nodes for the lab (`aggapi dev --nodes N`): each on its own loopback address
127.0.1.(10+i), with a kubelet-sim (`aggapi-edge kubelet-sim`, TLS from the lab's kubelet CA, clients
from the kubelet-client CA) and the real tunnel agent (`aggapi-edge tunnel-agent`, a node certificate
CN=system:node:<name>, O=system:nodes from the lab's node CA) dialling aggapi's tunnel port. Each node
has its Node object and a sample Pod in the devcluster; the devcluster reaches the kubelets only
through aggapi's HTTP CONNECT egress (a unix socket), as kube-apiserver with an egress selector does.

Lab PKI files (in the lab's pki directory, CAs kept across runs, leaf certificates re-issued):
  kubelet-ca          signs each kubelet-sim's serving certificate (its IP)
  kubelet-client-ca   signs kubelet-client.crt, what the devcluster and aggapi present to kubelets
  node-ca             signs the agents' node certificates (aggapi's --tunnel-agent-ca-file)
  client-ca           (the devcluster's) signs each kubelet-sim's heartbeat.crt, CN=system:node:<name>,
                      O=system:nodes, with which it renews its Lease and patches its Node's status
"""

from __future__ import annotations

import errno
import json
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aggapi.devcluster.labkit import Child, JSONClient, wait_for
from aggapi.devcluster.labrelay import Relay
from aggapi.devcluster.pki import DevclusterPKI
from certs.files import load_or_create_ca, write_pair
from certs.pki import issue_client, issue_serving

SHADOW_PORT = 10261  # labshadow.py: the node's shadow-apiserver (HTTP); 10267 health, 10268 HTTPS
SHADOW_PORTS = (10261, 10267, 10268)
SHADOW_SECURE_PORT = 10268
KUBELET_PORT = 10250
SAMPLE_PORT = 8080
NAMESPACE = "default"
POOLS = ("hangzhou", "beijing")
EDGE_LABEL = "openyurt.io/is-edge-worker"
POOL_LABEL = "apps.openyurt.io/nodepool"
KUBELET_CLIENT_CN = "kube-apiserver-kubelet-client"


@dataclass(frozen=True, slots=True)
class EdgeNode:
    index: int
    name: str
    address: str

    @property
    def pool(self) -> str:
        return POOLS[self.index % len(POOLS)]

    @property
    def pod(self) -> str:
        return f"sample-{self.name}"


def plan_nodes(count: int, addresses: tuple[str, ...] = ()) -> list[EdgeNode]:
    """edge-0 .. edge-(N-1) on 127.0.1.(10+i), or on the given addresses."""
    addrs = list(addresses) or [f"127.0.1.{10 + i}" for i in range(count)]
    if len(addrs) < count:
        raise ValueError(f"{count} nodes need {count} addresses, got {len(addrs)}")
    return [EdgeNode(i, f"edge-{i}", addrs[i]) for i in range(count)]


def check_bindable(address: str, port: int = KUBELET_PORT) -> None:
    with socket.socket() as s:
        try:
            s.bind((address, port))
        except OSError as e:
            why = "in use (another lab or test running?)" if e.errno == errno.EADDRINUSE else e.strerror
            raise RuntimeError(f"cannot use {address}:{port} for a simulated kubelet: {why}") from None


def egress_selector(uds: Path) -> str:
    return (
        "# kube-apiserver's EgressSelectorConfiguration: cluster (kubelet) traffic through aggapi's tunnel.\n"
        "apiVersion: apiserver.k8s.io/v1beta1\n"
        "kind: EgressSelectorConfiguration\n"
        "egressSelections:\n"
        "- name: cluster\n"
        "  connection:\n"
        "    proxyProtocol: HTTPConnect\n"
        "    transport:\n"
        "      uds:\n"
        f"        udsName: {json.dumps(str(uds))}\n"
    )


def node_manifest(node: EdgeNode) -> dict[str, Any]:
    from edge.kubelet_sim.node import node_object  # what a kubelet-sim would register

    return node_object(
        _identity(node), labels={EDGE_LABEL: "true", POOL_LABEL: node.pool}, kubelet_port=KUBELET_PORT
    )


def _identity(node: EdgeNode) -> Any:
    from edge.kubelet_sim.config import NodeIdentity

    return NodeIdentity(node.name, node.address)


def sample_pod(node: EdgeNode) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": node.pod, "namespace": NAMESPACE, "labels": {"app": "sample"}},
        "spec": {
            "nodeName": node.name,
            "containers": [
                {
                    "name": "app",
                    "image": "sample:1",
                    "stdin": True,
                    "env": [{"name": "NODE_NAME", "value": node.name}],
                    "ports": [{"containerPort": SAMPLE_PORT, "name": "echo"}],
                }
            ],
        },
    }


def running_status(node: EdgeNode, pod: dict[str, Any]) -> dict[str, Any]:
    """What the kubelet would post for the sample pod once its container runs."""
    started = pod["metadata"].get("creationTimestamp", "")
    return {
        "phase": "Running",
        "hostIP": node.address,
        "podIP": node.address,
        "startTime": started,
        "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": started}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ],
        "containerStatuses": [
            {
                "name": "app",
                "image": "sample:1",
                "imageID": "",
                "containerID": "kubeletsim://app",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            }
        ],
    }


class LabNodes:
    """Files, registration and processes of the lab's edge nodes; `start_child` runs a lab child."""

    def __init__(
        self,
        state: Path,
        pki_dir: Path,
        nodes: list[EdgeNode],
        start_child: Callable[[str, list[str]], Child],
        api_server: str = "",
        heartbeat_interval: str = "10s",
        shadows: bool = False,
    ) -> None:
        self.state = state
        self.pki_dir = pki_dir
        self.nodes = nodes
        self.start_child = start_child
        self.api_server = api_server  # the devcluster, where the kubelet-sims heartbeat to
        # Each node's "cloud link": a relay to the devcluster that `aggapi dev cut` can break.
        self.relays: dict[str, Relay] = {}
        self.heartbeat_interval = heartbeat_interval
        # Each node runs a shadow-apiserver (labshadow.py) its kubelet-sim talks to kube-apiserver through.
        self.shadows = shadows
        self.egress_uds = _socket_path(state / "egress.sock")
        self.egress_config = state / "egress-selector.yaml"
        self.kubelet_ca = pki_dir / "kubelet-ca.crt"
        self.kubelet_client_cert = pki_dir / "kubelet-client.crt"
        self.kubelet_client_key = pki_dir / "kubelet-client.key"
        self.kubelet_client_ca = pki_dir / "kubelet-client-ca.crt"
        self.node_ca = pki_dir / "node-ca.crt"

    def node(self, name: str) -> EdgeNode:
        return next(n for n in self.nodes if n.name == name)

    def start_links(self) -> None:
        """One relay per node in front of the devcluster: everything a node sends to kube-apiserver
        (heartbeats, votes) goes through it."""
        if not self.api_server:
            return
        port = urlsplit(self.api_server).port or 443
        for n in self.nodes:
            if n.name not in self.relays:
                relay = Relay(n.name, "127.0.0.1", port)
                relay.start()
                self.relays[n.name] = relay

    def stop_links(self) -> None:
        for relay in self.relays.values():
            relay.stop()
        self.relays.clear()

    def write_sample_app_token(self, token: str) -> None:
        for n in self.nodes:
            path = self._dir(n) / "sample-app.token"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(token + "\n")
            path.chmod(0o600)

    def link(self, node: EdgeNode) -> str:
        """The URL of kube-apiserver as this node reaches it (through its relay once started)."""
        relay = self.relays.get(node.name)
        return relay.url if relay is not None else self.api_server

    def _dir(self, node: EdgeNode) -> Path:
        return self.state / "nodes" / node.name

    # ---- files -----------------------------------------------------------------------------------

    def prepare_files(self) -> None:
        for n in self.nodes:
            check_bindable(n.address)
            if self.shadows:
                for port in SHADOW_PORTS:
                    check_bindable(n.address, port)
        kubelet_ca = load_or_create_ca(self.pki_dir, "kubelet-ca", common_name="aggapi-lab-kubelet-ca")
        client_ca = load_or_create_ca(
            self.pki_dir, "kubelet-client-ca", common_name="aggapi-lab-kubelet-client-ca"
        )
        node_ca = load_or_create_ca(self.pki_dir, "node-ca", common_name="aggapi-lab-node-ca")
        client = issue_client(client_ca, common_name=KUBELET_CLIENT_CN, organizations=["system:masters"])
        write_pair(client, self.kubelet_client_cert, self.kubelet_client_key)
        for n in self.nodes:
            d = self._dir(n)
            d.mkdir(parents=True, exist_ok=True)
            serving = issue_serving(
                kubelet_ca, common_name=f"kubelet-{n.name}", dns_names=[n.name], ips=[n.address]
            )
            write_pair(serving, d / "kubelet.crt", d / "kubelet.key")
            agent = issue_client(node_ca, common_name=f"system:node:{n.name}", organizations=["system:nodes"])
            write_pair(agent, d / "node.crt", d / "node.key")
        self.egress_config.write_text(egress_selector(self.egress_uds))
        api_client_ca = DevclusterPKI(self.pki_dir).client_ca_pair()
        for n in self.nodes:
            cert = issue_client(
                api_client_ca, common_name=f"system:node:{n.name}", organizations=["system:nodes"]
            )
            write_pair(cert, self._dir(n) / "heartbeat.crt", self._dir(n) / "heartbeat.key")

    def heartbeat_args(self, node: EdgeNode) -> list[str]:
        if not self.api_server:
            return []
        d = self._dir(node)
        timing = [
            f"--node-lease-renew-interval={self.heartbeat_interval}",
            f"--node-status-update-frequency={self.heartbeat_interval}",
        ]
        if self.shadows:  # through the node's shadow-apiserver, which adds the node's credentials
            return [
                f"--api-server=http://{node.address}:{SHADOW_PORT}",
                f"--api-view-file={d / 'api-view.json'}",
                # a sample in-cluster client: its token, the shadow's HTTPS port (the kubernetes
                # Service its masterservice filter gives pods), the shadow's serving cert's CA
                f"--pod-client-server=https://{node.address}:{SHADOW_SECURE_PORT}",
                f"--pod-client-token-file={d / 'sample-app.token'}",
                f"--pod-client-ca-file={self.pki_dir / 'kubelet-ca.crt'}",
                *timing,
            ]
        return [
            f"--api-server={self.link(node)}",
            f"--api-client-cert-file={d / 'heartbeat.crt'}",
            f"--api-client-key-file={d / 'heartbeat.key'}",
            f"--api-ca-file={DevclusterPKI(self.pki_dir).ca}",
            *timing,
        ]

    def devcluster_args(self) -> list[str]:
        return [
            f"--egress-selector-config-file={self.egress_config}",
            f"--kubelet-client-certificate={self.kubelet_client_cert}",
            f"--kubelet-client-key={self.kubelet_client_key}",
            f"--kubelet-certificate-authority={self.kubelet_ca}",
        ]

    def tunnel_args(self, tunnel_port: int, kubeconfig: Path) -> list[str]:
        """aggapi serve's tunnel flags: agents on tunnel_port, the egress on a unix socket only."""
        return [
            f"--tunnel-port={tunnel_port}",
            f"--tunnel-agent-ca-file={self.node_ca}",
            f"--tunnel-allowed-ports={KUBELET_PORT}",
            f"--egress-uds-path={self.egress_uds}",
            "--egress-port=0",
            f"--kubeconfig={kubeconfig}",
            f"--kubelet-client-certificate={self.kubelet_client_cert}",
            f"--kubelet-client-key={self.kubelet_client_key}",
            f"--kubelet-certificate-authority={self.kubelet_ca}",
        ]

    # ---- the devcluster's objects ----------------------------------------------------------------

    def register(self, admin: JSONClient) -> None:
        """Each Node, and its sample Pod bound to it and Running (as its kubelet would report)."""
        for n in self.nodes:
            admin.apply("/api/v1/nodes", node_manifest(n))
            pods = f"/api/v1/namespaces/{NAMESPACE}/pods"
            pod = admin.apply(pods, sample_pod(n))
            pod = {**pod, "status": running_status(n, pod)}
            code, stored = admin.request("PUT", f"{pods}/{n.pod}/status", pod)
            if code != 200:
                raise RuntimeError(f"setting the status of pod {n.pod}: {code} {stored}")
            (self._dir(n) / "pods.json").write_text(
                json.dumps({"kind": "PodList", "items": [stored]}, indent=1)
            )

    # ---- processes -------------------------------------------------------------------------------

    def start_sims(self) -> None:
        for n in self.nodes:
            self.start_sim(n)

    def start_sim(self, n: EdgeNode) -> Child:
        """Its kubelet-sim (a cut cloud link is the relay's business: the sim always heartbeats)."""
        d = self._dir(n)
        return self.start_child(
            f"kubelet-{n.name}",
            [
                sys.executable,
                "-m",
                "edge",
                "kubelet-sim",
                f"--node-name={n.name}",
                f"--node-ip={n.address}",
                f"--port={KUBELET_PORT}",
                f"--tls-cert-file={d / 'kubelet.crt'}",
                f"--tls-private-key-file={d / 'kubelet.key'}",
                f"--client-ca-file={self.kubelet_client_ca}",
                f"--root-dir={d / 'kubelet'}",
                f"--pods-file={d / 'pods.json'}",
                f"--port-forward={NAMESPACE}/{n.pod}:{SAMPLE_PORT}",
                f"--log-ticker={NAMESPACE}/{n.pod}/app=1",
                *self.heartbeat_args(n),
            ],
        )

    def start_agent(self, node: EdgeNode, server: str, server_ca: Path) -> Child:
        d = self._dir(node)
        return self.start_child(
            f"agent-{node.name}",
            [
                sys.executable,
                "-m",
                "edge",
                "tunnel-agent",
                f"--server={server}",
                f"--node-name={node.name}",
                f"--cert={d / 'node.crt'}",
                f"--key={d / 'node.key'}",
                f"--ca={server_ca}",
                f"--address={node.address}",
                f"--allow={node.address}:{KUBELET_PORT}",
                "--backoff-initial=0.2",
                "--backoff-max=2",
                # Each simulated node has its own loopback address, so each agent's metrics port too.
                f"--metrics-bind-address={node.address}:10265",
            ],
        )

    def wait_proxied(
        self, admin: JSONClient, node: EdgeNode, alive: list[Child], timeout: float = 60
    ) -> None:
        """Until the devcluster reaches the node's kubelet (nodes/proxy/healthz, through the tunnel)."""

        def probe() -> bool | None:
            code, body = admin.get(f"/api/v1/nodes/{node.name}/proxy/healthz")
            return (code == 200 and body == "ok") or None

        wait_for(
            f"node {node.name} reachable through the tunnel",
            probe,
            timeout=timeout,
            interval=0.2,
            alive=alive,
        )


def _socket_path(preferred: Path) -> Path:
    """Unix socket paths are limited to 107 bytes; a deep state directory gets one under /tmp."""
    if len(str(preferred)) <= 100:
        return preferred
    import hashlib

    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    return Path("/tmp") / f"aggapi-egress-{digest}.sock"
