"""Fixtures for the simulated kubelet: a PKI, a sim on its own 127.0.1.N:10250, an mTLS client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from kubelet_sim_support import Node, SimPKI, started_sim

from certs.files import write_pair
from certs.pki import issue_client, new_ca


@pytest.fixture(scope="session")
def sim_pki(tmp_path_factory: pytest.TempPathFactory) -> SimPKI:
    directory = tmp_path_factory.mktemp("kubelet-pki")
    ca = new_ca("kubelet-sim-test-ca")
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca.cert_pem())
    client = issue_client(ca, common_name="kube-apiserver-kubelet-client", organizations=["system:masters"])
    write_pair(client, directory / "client.crt", directory / "client.key")
    return SimPKI(directory, ca, ca_file, directory / "client.crt", directory / "client.key")


@pytest.fixture
async def node(sim_pki: SimPKI, tmp_path: Path) -> AsyncIterator[Node]:
    async with started_sim(sim_pki, tmp_path / "kubelet") as sim:
        yield Node(sim, sim.config.node, [dict(p) for p in sim.config.pods])


@pytest.fixture
async def client(sim_pki: SimPKI) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=sim_pki.client_context())
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s
