"""Fixtures of the shadow-apiserver tests: one devcluster (real etcd) as kube-apiserver, a node client
certificate for `system:node:edge-1`, a cuttable relay in front of the devcluster per test, and a
ShadowConfig pointing at it (ports 0, short intervals)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from shadowkit import NODE, Kube, Relay, admin_ssl, unique
from support.devcluster import Devcluster
from support.etcd import EtcdServer

from aggapi.devcluster.labkit import free_port
from aggapi.devcluster.pki import issue_user
from edge.kubelet_sim.config import NodeIdentity
from edge.kubelet_sim.node import node_object
from edge.shadow.config import ShadowConfig

POD_TOKEN = "pod-token-0123456789"
TOKENS = f'{POD_TOKEN},pod-reader,uid-pod,"apps"\n'
POLICY = """\
rules:
  - groups: ["system:nodes"]
    verbs: ["get", "list", "watch"]
    apiGroups: ["", "discovery.k8s.io", "coordination.k8s.io", "apps"]
    resources: ["*"]
  - groups: ["system:nodes"]
    verbs: ["create", "update", "patch"]
    apiGroups: ["", "coordination.k8s.io", "events.k8s.io"]
    resources: ["leases", "nodes", "nodes/status", "events"]
  - users: ["pod-reader"]
    verbs: ["get", "list", "watch"]
    apiGroups: [""]
    resources: ["configmaps"]
"""


@dataclass(frozen=True)
class NodeCreds:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def shadow_dc(etcd_server: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devcluster]:
    dc = Devcluster(tmp_path_factory.mktemp("shadow-dc"), etcd_server.client_url, TOKENS, POLICY)
    dc.start()
    try:
        admin = dc.admin()
        admin.apply("/api/v1/nodes", node_object(NodeIdentity(NODE, "127.0.1.9")))
        yield dc
    finally:
        dc.stop()


@pytest.fixture(scope="session")
def node_creds(shadow_dc: Devcluster, tmp_path_factory: pytest.TempPathFactory) -> NodeCreds:
    out = tmp_path_factory.mktemp("node-pki")
    cert, key = issue_user(shadow_dc.pki, f"system:node:{NODE}", ["system:nodes"], out)
    return NodeCreds(shadow_dc.pki.ca, cert, key)


@pytest.fixture
async def admin(shadow_dc: Devcluster) -> AsyncIterator[Kube]:
    ctx = admin_ssl(shadow_dc.pki.ca, shadow_dc.pki.admin_cert, shadow_dc.pki.admin_key)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        yield Kube(shadow_dc.url, s, ua="shadow-test-admin/1.0")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


@pytest.fixture
async def relay(shadow_dc: Devcluster) -> AsyncIterator[Relay]:
    r = Relay(shadow_dc.port)
    await r.start()
    try:
        yield r
    finally:
        await r.close()


@pytest.fixture
def cfg(tmp_path: Path, relay: Relay, node_creds: NodeCreds) -> ShadowConfig:
    return ShadowConfig(
        node_name=NODE,
        servers=(f"https://127.0.0.1:{relay.port}",),
        ca_file=node_creds.ca,
        cert_file=node_creds.cert,
        key_file=node_creds.key,
        cache_dir=tmp_path / "cache",
        port=0,
        secure_port=0,
        health_port=free_port(),
        probe_period=0.1,
        probe_timeout=0.5,
        connect_timeout=1.0,
        request_timeout=10.0,
        bookmark_interval=0.2,
        cert_check_interval=0.2,
        fsync=False,
    )


@pytest.fixture
async def ns(admin: Kube) -> str:
    name = unique("shadow")
    code, out = await admin.req(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    assert code == 201, out
    return name
