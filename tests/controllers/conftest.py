from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from npkit import NPEnv, start_np_aggapi
from support.devcluster import Devcluster
from support.etcd import EtcdServer

from aggapi.devlab import LabPKI


@pytest.fixture(scope="module")
def np_env(
    etcd_server: EtcdServer, pki: LabPKI, devcluster: Devcluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NPEnv]:
    """`aggapi serve` with its controllers on the session devcluster (no tunnel), its own lease."""
    work = tmp_path_factory.mktemp("nodepools")
    env = start_np_aggapi(etcd_server, pki, devcluster, work, lease=f"np-{uuid.uuid4().hex[:8]}")
    try:
        yield env
    finally:
        env.aggapi.stop()
