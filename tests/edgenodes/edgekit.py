"""Shared by the edgenodes tests: a PKI for agents and kubelets, a real `aggapi serve` with the tunnel
pointed at the devcluster's Nodes, and simulated edge nodes (Node object + KubeletSim + TunnelAgent, each
on its own 127.0.1.N) started in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.aggapi import AggapiServer
from support.devcluster import Devcluster

from certs.files import write_pair
from certs.pki import CertKeyPair, issue_client, issue_serving, new_ca
from edge.kubelet_sim import KUBELET_PORT, KubeletSim, KubeletSimConfig, NodeIdentity, Timeouts, node_object
from edge.tunnel.agent import TunnelAgent
from edge.tunnel.config import AgentConfig

GROUP_PATH = "/apis/edge.aggapi.io/v1alpha1"
EN = f"{GROUP_PATH}/edgenodes"
EDGE_LABELS = {"openyurt.io/is-edge-worker": "true"}


@dataclass
class EdgePKI:
    dir: Path
    agent_ca: CertKeyPair
    kubelet_ca: CertKeyPair
    files: dict[str, Path] = field(default_factory=dict)

    def write(self, name: str, pair: CertKeyPair) -> tuple[Path, Path]:
        cert, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        write_pair(pair, cert, key)
        return cert, key

    def node_cert(self, node: str) -> tuple[Path, Path]:
        pair = issue_client(self.agent_ca, common_name=f"system:node:{node}", organizations=["system:nodes"])
        return self.write(f"node-{node}", pair)

    def kubelet_serving(self, address: str, ips: list[str] | None = None) -> tuple[Path, Path]:
        pair = issue_serving(self.kubelet_ca, common_name=f"kubelet-{address}", ips=ips or [address])
        return self.write(f"kubelet-{address}", pair)


def make_edge_pki(directory: Path) -> EdgePKI:
    directory.mkdir(parents=True, exist_ok=True)
    pki = EdgePKI(directory, new_ca("edge-agent-ca"), new_ca("kubelet-ca"))
    for name, ca in (("agent-ca", pki.agent_ca), ("kubelet-ca", pki.kubelet_ca)):
        pki.files[name] = directory / f"{name}.crt"
        pki.files[name].write_bytes(ca.cert_pem())
    client = issue_client(
        pki.kubelet_ca, common_name="kube-apiserver-kubelet-client", organizations=["system:masters"]
    )
    pki.files["kubelet-client.crt"], pki.files["kubelet-client.key"] = pki.write("kubelet-client", client)
    return pki


def edge_args(pki: EdgePKI, kubeconfig: Path, tunnel_port: int, uds: Path) -> tuple[str, ...]:
    """`aggapi serve` flags for the edge parts, as the lab and a deployment give them."""
    return (
        f"--kubeconfig={kubeconfig}",
        f"--tunnel-port={tunnel_port}",
        f"--tunnel-agent-ca-file={pki.files['agent-ca']}",
        "--tunnel-allowed-ports=10250",
        f"--egress-uds-path={uds}",
        "--egress-port=0",
        # Edge nodes live in 127.0.1.0/24 too: the egress must still never go around their tunnel.
        "--egress-direct-cidrs=127.0.1.0/24,127.0.2.0/24",
        "--egress-direct-domains=localhost",
        f"--kubelet-client-certificate={pki.files['kubelet-client.crt']}",
        f"--kubelet-client-key={pki.files['kubelet-client.key']}",
        f"--kubelet-certificate-authority={pki.files['kubelet-ca']}",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_random = random.SystemRandom()


def free_node_address() -> str:
    """A 127.0.1.N (N in 20..99, away from the lab's) whose kubelet port is free now."""
    for _ in range(300):
        address = f"127.0.1.{_random.randrange(20, 100)}"
        with socket.socket() as s:
            try:
                s.bind((address, KUBELET_PORT))
                return address
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
    raise RuntimeError("no free 127.0.1.N:10250")


@dataclass
class EdgeEnv:
    aggapi: AggapiServer
    devcluster: Devcluster
    pki: EdgePKI
    tunnel_port: int
    egress_uds: Path
    kubeconfig: Path  # kubectl → aggapi directly, admin client certificate
    workdir: Path

    @property
    def tunnel_endpoint(self) -> str:
        return f"127.0.0.1:{self.tunnel_port}"


def sample_pod(node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sample", "namespace": "default", "uid": f"uid-sample-{node}"},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "sample:1", "stdin": True}]},
        "status": {"phase": "Running"},
    }


@dataclass
class SimNode:
    env: EdgeEnv
    name: str
    address: str
    sim: KubeletSim
    agent_config: AgentConfig
    agent: TunnelAgent | None = None
    task: asyncio.Task[None] | None = None

    def start_agent(self, **overrides: Any) -> TunnelAgent:
        assert self.task is None, "agent already running"
        from dataclasses import replace

        self.agent = TunnelAgent(replace(self.agent_config, **overrides))
        self.task = asyncio.create_task(self.agent.run(), name=f"test-agent-{self.name}")
        return self.agent

    async def stop_agent(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


def node_labels(edge: bool, pool: str = "") -> dict[str, str]:
    labels = dict(EDGE_LABELS) if edge else {}
    if pool:
        labels["apps.openyurt.io/nodepool"] = pool
    return labels


@contextlib.asynccontextmanager
async def sim_node(
    env: EdgeEnv,
    root: Path,
    name: str,
    *,
    labels: dict[str, str],
    agent: bool = True,
    hostname: str = "",
    kubelet_cert_ips: list[str] | None = None,
    **agent_kw: Any,
) -> AsyncIterator[SimNode]:
    """A Node object in the devcluster, its kubelet sim on a free 127.0.1.N:10250 and (by default) its
    tunnel agent connected to aggapi. Everything is removed on exit."""
    admin = env.devcluster.admin()
    for _ in range(20):
        address = free_node_address()
        cert, key = env.pki.kubelet_serving(address, kubelet_cert_ips)
        sim = KubeletSim(
            KubeletSimConfig(
                node=NodeIdentity(name, address),
                tls_cert_file=cert,
                tls_key_file=key,
                client_ca_file=env.pki.files["kubelet-ca"],
                root_dir=root / name,
                pods=(sample_pod(name),),
                log_poll_interval=0.02,
                timeouts=Timeouts(write=10, dial=5, stream_creation=5, exit_grace=0.5),
            )
        )
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(sim.running())
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            continue
        break
    else:
        raise RuntimeError("could not bind a kubelet sim")
    async with stack:
        manifest = node_object(NodeIdentity(name, address), labels=labels)
        if hostname:  # a Hostname address other than the node's name
            for a in manifest["status"]["addresses"]:
                if a["type"] == "Hostname":
                    a["address"] = hostname
        admin.apply("/api/v1/nodes", manifest)
        ncert, nkey = env.pki.node_cert(name)
        config = AgentConfig(
            node_name=name,
            servers=(env.tunnel_endpoint,),
            cert_file=ncert,
            key_file=nkey,
            ca_file=env.aggapi.pki.ca,
            addresses=(address,),
            backoff_initial=0.05,
            backoff_max=0.5,
        )
        node = SimNode(env, name, address, sim, config)
        if agent:
            node.start_agent(**agent_kw)
        try:
            yield node
        finally:
            await node.stop_agent()
            admin.request("DELETE", f"/api/v1/nodes/{name}")


async def eventually(pred: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = pred()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)


def unique(prefix: str) -> str:
    return f"{prefix}-{_random.randrange(16**6):06x}"
