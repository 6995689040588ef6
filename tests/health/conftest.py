from __future__ import annotations

from collections.abc import Iterator

import pytest
from healthkit import HealthEnv, start_health_aggapi
from support.devcluster import Devcluster
from support.etcd import EtcdServer

from aggapi.devlab import LabPKI


@pytest.fixture(scope="module")
def health_env(
    etcd_server: EtcdServer, pki: LabPKI, devcluster: Devcluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HealthEnv]:
    """`aggapi serve` with its Node informer on the session devcluster, no tunnel, --health-vote-ttl=3s."""
    env = start_health_aggapi(etcd_server, pki, devcluster, tmp_path_factory.mktemp("health"))
    try:
        yield env
    finally:
        env.aggapi.stop()
