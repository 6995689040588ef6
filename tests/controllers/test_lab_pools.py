"""`aggapi dev` with simulated edge nodes: the lab creates the hangzhou and beijing pools, and
`kubectl get np` (through the devcluster's aggregation) shows their ready counts, kept by the controller
that the lab's aggapi runs as the elected leader with the lab's (manifest-equivalent) RBAC."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from npkit import eventually
from support.aggapi import kubectl
from support.etcd import EtcdServer
from support.lab import start_lab

from aggapi.devlab import Lab

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pool_lab(etcd_server: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = start_lab(tmp_path_factory.mktemp("pool-lab"), etcd_server.client_url, nodes=2)
    try:
        yield lab
    finally:
        lab.stop()


def test_lab_pools_show_ready_counts(pool_lab: Lab) -> None:
    def rows() -> dict[str, list[str]] | None:
        res = kubectl(pool_lab.kubeconfig, "get", "np")
        if res.returncode != 0:
            return None
        lines = res.stdout.splitlines()
        assert lines[0].split() == ["NAME", "TYPE", "READYNODES", "NOTREADYNODES", "AGE"]
        table = {line.split()[0]: line.split()[1:4] for line in lines[1:]}
        return table if table == {"beijing": ["Edge", "1", "0"], "hangzhou": ["Edge", "1", "0"]} else None

    eventually(rows, "both pools listed with one ready node each")
    res = kubectl(
        pool_lab.kubeconfig, "get", "--raw", "/apis/edge.aggapi.io/v1alpha1/nodepools/hangzhou/topology"
    )
    assert res.returncode == 0, res.stderr
    assert '"edge-0"' in res.stdout and '"Connected"' in res.stdout  # edge-0 is in hangzhou, its agent is up
