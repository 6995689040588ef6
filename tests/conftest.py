from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.aggapi import AggapiServer
from support.devcluster import DEV_POLICY, DEV_TOKENS, Devcluster
from support.etcd import EtcdServer, start_etcd
from support.lab import start_lab

from aggapi.devlab import Lab, LabPKI, make_pki


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One real etcd member for the whole session; tests keep to their own key prefixes."""
    server = start_etcd(tmp_path_factory.mktemp("etcd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LabPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def aggapi(
    etcd_server: EtcdServer, pki: LabPKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AggapiServer]:
    """One `aggapi serve` for tests that only need a server; tests use their own object names."""
    server = AggapiServer(pki, etcd_server.client_url, tmp_path_factory.mktemp("aggapi"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_aggapi(etcd_server: EtcdServer, pki: LabPKI, tmp_path: Path) -> Iterator[AggapiServer]:
    """A private server with its own etcd prefix, for tests that restart it or need an empty store."""
    server = AggapiServer(pki, etcd_server.client_url, tmp_path / "aggapi")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kubeconfig(aggapi: AggapiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return aggapi.kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")


@pytest.fixture(scope="session")
def devcluster(etcd_server: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devcluster]:
    """One real devcluster (kube-apiserver stand-in) on the session etcd, with its own prefix."""
    dc = Devcluster(tmp_path_factory.mktemp("devcluster"), etcd_server.client_url, DEV_TOKENS, DEV_POLICY)
    dc.start()
    try:
        yield dc
    finally:
        dc.stop()


@pytest.fixture(scope="session")
def lab(etcd_server: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The whole `aggapi dev` lab: devcluster + aggapi registered as APIService v1alpha1.edge.aggapi.io."""
    the_lab = start_lab(tmp_path_factory.mktemp("lab"), etcd_server.client_url)
    try:
        yield the_lab
    finally:
        the_lab.stop()
