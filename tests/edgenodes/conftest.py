from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from edgekit import EdgeEnv, EdgePKI, edge_args, free_port, make_edge_pki
from support.aggapi import AggapiServer, Api, api_client
from support.devcluster import Devcluster
from support.etcd import EtcdServer

from aggapi.devlab import LabPKI


@pytest.fixture(scope="module")
def edge_pki(tmp_path_factory: pytest.TempPathFactory) -> EdgePKI:
    return make_edge_pki(tmp_path_factory.mktemp("edge-pki"))


@pytest.fixture(scope="module")
def edge_env(
    etcd_server: EtcdServer,
    pki: LabPKI,
    devcluster: Devcluster,
    edge_pki: EdgePKI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EdgeEnv]:
    """`aggapi serve` with the tunnel on, its Node informer on the devcluster (admin kubeconfig), the
    egress on a unix socket, and kubelet TLS from the edge PKI."""
    work = tmp_path_factory.mktemp("edgenodes")
    sock_dir = Path(tempfile.mkdtemp(prefix="en-", dir="/tmp"))  # unix socket paths are short
    uds = sock_dir / "egress.sock"
    tunnel_port = free_port()
    kubeconfig = devcluster.kubeconfig(work / "devcluster.kubeconfig")
    server = AggapiServer(
        pki,
        etcd_server.client_url,
        work / "aggapi",
        extra_args=edge_args(edge_pki, kubeconfig, tunnel_port, uds),
    )
    server.start()
    try:
        kubeconfig = server.kubeconfig(work / "aggapi.kubeconfig")
        yield EdgeEnv(server, devcluster, edge_pki, tunnel_port, uds, kubeconfig, work)
    finally:
        server.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.fixture
async def api(edge_env: EdgeEnv) -> AsyncIterator[Api]:
    async with api_client(edge_env.aggapi) as client:
        yield client
