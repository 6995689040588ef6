"""Shared by the edge health tests: a real `aggapi serve` (controllers on the session devcluster, no
tunnel, a short --health-vote-ttl), Node objects in pools, and node client certificates issued by the CA
aggapi trusts for client certificates (CN=system:node:<name>, O=system:nodes), as kubelets and health
agents hold."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from support.aggapi import AggapiServer
from support.devcluster import Devcluster
from support.etcd import EtcdServer

from aggapi.devcluster.labkit import JSONClient
from aggapi.devlab import LabPKI
from aggapi.machinery.timefmt import format_rfc3339
from certs.files import load_or_create_ca, write_pair
from certs.pki import issue_client
from edge.kubelet_sim import NodeIdentity, node_object

EN = "/apis/edge.aggapi.io/v1alpha1/edgenodes"
POOL_LABEL = "apps.openyurt.io/nodepool"
VOTE_TTL = "3s"
T = TypeVar("T")
_random = random.SystemRandom()


@dataclass
class HealthEnv:
    aggapi: AggapiServer
    devcluster: Devcluster
    kubeconfig: Path  # kubectl → aggapi directly (admin)
    workdir: Path
    clients: dict[str, JSONClient] = field(default_factory=dict)

    @property
    def dc(self) -> JSONClient:
        return self.devcluster.admin()

    @property
    def agg(self) -> JSONClient:
        pki = self.aggapi.pki
        return JSONClient(self.aggapi.url, pki.ca, (pki.admin_cert, pki.admin_key))

    def as_node(self, node: str) -> JSONClient:
        """A client holding node `node`'s client certificate."""
        if node not in self.clients:
            pki = self.aggapi.pki
            ca = load_or_create_ca(pki.ca.parent, "ca", common_name="aggapi-dev-ca")
            pair = issue_client(ca, common_name=f"system:node:{node}", organizations=["system:nodes"])
            cert, key = self.workdir / f"node-{node}.crt", self.workdir / f"node-{node}.key"
            write_pair(pair, cert, key)
            self.clients[node] = JSONClient(self.aggapi.url, pki.ca, (cert, key))
        client: JSONClient = self.clients[node]
        return client


def start_health_aggapi(etcd: EtcdServer, pki: LabPKI, devcluster: Devcluster, work: Path) -> HealthEnv:
    kubeconfig = devcluster.kubeconfig(work / "devcluster.kubeconfig")
    lease = f"health-{_random.randrange(16**6):06x}"
    server = AggapiServer(
        pki,
        etcd.client_url,
        work / "aggapi",
        extra_args=(
            f"--kubeconfig={kubeconfig}",
            "--tunnel-port=0",
            f"--leader-elect-resource-name={lease}",
            f"--health-vote-ttl={VOTE_TTL}",
        ),
    )
    server.start()
    return HealthEnv(server, devcluster, server.kubeconfig(work / "aggapi.kubeconfig"), work)


def unique(prefix: str) -> str:
    return f"{prefix}-{_random.randrange(16**6):06x}"


def make_pool(env: HealthEnv, pool: str, count: int) -> list[str]:
    """`count` Node objects labelled into `pool` (no kubelets: votes need only the Nodes)."""
    names = []
    for i in range(count):
        name = f"{pool}-n{i}"
        address = f"127.0.3.{_random.randrange(1, 250)}"
        env.dc.apply("/api/v1/nodes", node_object(NodeIdentity(name, address), labels={POOL_LABEL: pool}))
        names.append(name)
    return names


def delete_nodes(env: HealthEnv, names: list[str]) -> None:
    for name in names:
        env.dc.request("DELETE", f"/api/v1/nodes/{name}")


def vote_doc(voter: str, target: str, result: str, **over: Any) -> dict[str, Any]:
    return {
        "apiVersion": "edge.aggapi.io/v1alpha1",
        "kind": "HealthVote",
        "voter": voter,
        "target": target,
        "observedAt": format_rfc3339(datetime.now(UTC)),
        "result": result,
        "probes": {"kubelet": {"ok": result == "Healthy"}},
        **over,
    }


def vote(env: HealthEnv, voter: str, target: str, result: str, **over: Any) -> tuple[int, Any]:
    return env.as_node(voter).request(
        "POST", f"{EN}/{target}/health", vote_doc(voter, target, result, **over)
    )


def health(env: HealthEnv, node: str) -> dict[str, Any]:
    code, body = env.agg.get(f"{EN}/{node}/health")
    assert code == 200, body
    out: dict[str, Any] = body
    return out


def eventually(fn: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            done: T = last
            return done
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what} (last: {last!r})")
        time.sleep(0.1)
