"""Health agents in the lab (docs/health.md): each simulated node runs `aggapi-edge health-agent` on its
own loopback address (peer port 10266) with a peer certificate CN=system:node:<name>, O=system:nodes
(serverAuth + clientAuth) from the devcluster's client CA. Its peers trust that CA (`--ca`), and so does
the devcluster, where the agent posts its votes like kubectl would: `https://<devcluster>/apis/
edge.aggapi.io/v1alpha1/edgenodes/{target}/health`, aggregated to aggapi with the node's identity.
The peers are the other nodes of its pool, which the agent reads from its NodePool's topology through
kube-apiserver (`--api-server`, the node's cloud link), where it also posts its votes.

The failure scenarios of the lab are here too: cut a node's cloud link, stop a node entirely, cut a
whole pool off the cloud, and put each back; and put a node's sample pod back once aggapi's health
eviction (after `LabConfig.health_eviction_grace_period` Unhealthy) has evicted it."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aggapi.devcluster.labnodes import NAMESPACE, EdgeNode, check_bindable, running_status, sample_pod
from aggapi.devcluster.pki import DevclusterPKI
from certs.files import write_pair
from certs.pki import issue_peer

if TYPE_CHECKING:
    from aggapi.devcluster.lab import Lab

PEER_PORT = 10266
METRICS_PORT = 10269  # the agent's /metrics, on the node's own address


@dataclass(frozen=True, slots=True)
class HealthTiming:
    """The agents' probe period and hysteresis (aggapi-edge's defaults are 10s, 2s, 3 and 2)."""

    period: float = 2.0
    probe_timeout: float = 1.0
    failure_threshold: int = 2
    success_threshold: int = 2
    probes_per_period: int = 3


class LabHealth:
    """The lab's health agents (children `health-<node>`) and its failure scenarios."""

    def __init__(self, lab: Lab, timing: HealthTiming) -> None:
        assert lab.edge is not None
        self.lab = lab
        self.edge = lab.edge
        self.timing = timing
        self.pki = DevclusterPKI(lab.pki_dir)

    def _dir(self, node: EdgeNode) -> Path:
        return self.lab.state / "nodes" / node.name

    def pool(self, pool: str) -> list[EdgeNode]:
        return [n for n in self.edge.nodes if n.pool == pool]

    # ---- files -----------------------------------------------------------------------------------

    def prepare_files(self) -> None:
        """Each node's peer certificate."""
        client_ca = self.pki.client_ca_pair()
        for n in self.edge.nodes:
            check_bindable(n.address, PEER_PORT)
            d = self._dir(n)
            name, orgs = f"system:node:{n.name}", ["system:nodes"]
            cert = issue_peer(client_ca, common_name=name, organizations=orgs, ips=[n.address])
            write_pair(cert, d / "health.crt", d / "health.key")

    def args(self, node: EdgeNode, api_server: str) -> list[str]:
        d, t = self._dir(node), self.timing
        return [
            sys.executable,
            "-m",
            "edge",
            "health-agent",
            f"--node-name={node.name}",
            f"--address={node.address}",
            f"--cert={d / 'health.crt'}",
            f"--key={d / 'health.key'}",
            f"--ca={self.pki.client_ca}",
            f"--api-server={api_server}",  # members from its pool's topology; votes to .../health
            f"--vote-ca={self.pki.ca}",
            f"--state-dir={d / 'health'}",
            f"--peer-port={PEER_PORT}",
            f"--metrics-bind-address={node.address}:{METRICS_PORT}",  # several agents on one host
            f"--period={t.period}",
            f"--probe-timeout={t.probe_timeout}",
            f"--probes-per-period={t.probes_per_period}",
            f"--failure-threshold={t.failure_threshold}",
            f"--success-threshold={t.success_threshold}",
        ]

    # ---- one node's agent ------------------------------------------------------------------------

    def start(self, name: str) -> None:
        """Start a node's health agent; its votes go to kube-apiserver over the node's cloud link."""
        node = self.edge.node(name)
        self.lab.start_child(f"health-{name}", self.args(node, self.edge.link(node)))

    def stop(self, name: str) -> None:
        self.lab.stop_child(f"health-{name}")

    def start_all(self) -> None:
        for n in self.edge.nodes:
            self.start(n.name)

    # ---- scenarios -------------------------------------------------------------------------------

    def cut_link(self, name: str) -> None:
        """Cut a node's cloud link (Lab.cut_link: tunnel, heartbeats, votes); its kubelet port and health
        agent stay up, so its peers still see it."""
        self.lab.cut_link(name)

    def restore_link(self, name: str) -> None:
        self.lab.heal_link(name)

    def stop_node(self, name: str) -> None:
        """Stop a node entirely: tunnel agent, health agent and kubelet-sim."""
        self.lab.stop_agent(name)
        self.stop(name)
        self.lab.stop_kubelet(name)

    def start_node(self, name: str) -> None:
        self.lab.start_kubelet(name)
        self.start(name)
        self.lab.start_agent(name)

    def cut_pool(self, pool: str) -> None:
        """Cut a whole pool off the cloud: every member's link, while they still probe each other."""
        for n in self.pool(pool):
            self.cut_link(n.name)

    def restore_pool(self, pool: str) -> None:
        for n in self.pool(pool):
            self.restore_link(n.name)

    def recreate_pod(self, name: str) -> None:
        """Put a node's sample pod back after an eviction, as LabNodes.register creates it (bound to the
        node, status Running, in its kubelet-sim's pods.json), and restart the kubelet-sim to run it.
        Call it once the node is Healthy again: while it is Unhealthy the pod would be evicted again."""
        node = self.edge.node(name)
        admin, pods = self.lab.admin(), f"/api/v1/namespaces/{NAMESPACE}/pods"
        pod = admin.apply(pods, sample_pod(node))
        for _ in range(5):  # aggapi's autonomy controller may add its tolerations in between (409)
            code, stored = admin.request(
                "PUT", f"{pods}/{node.pod}/status", {**pod, "status": running_status(node, pod)}
            )
            if code != 409:
                break
            pod = admin.get(f"{pods}/{node.pod}")[1]
        if code != 200:
            raise RuntimeError(f"setting the status of pod {node.pod}: {code} {stored}")
        (self._dir(node) / "pods.json").write_text(
            json.dumps({"kind": "PodList", "items": [stored]}, indent=1)
        )
        self.lab.stop_kubelet(name)  # restarted: it reads pods.json at start
        self.edge.start_sim(self.edge.node(name))
