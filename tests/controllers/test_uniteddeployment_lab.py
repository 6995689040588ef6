"""A UnitedDeployment in the `aggapi dev` lab: across its hangzhou and beijing pools (selected by the
pools' type label), written by the controller with aggapi's ServiceAccount under the lab's
manifest-equivalent policy, shown by `kubectl get ud`, and cleaned up by the devcluster's
garbage-collector stand-in when the UnitedDeployment is deleted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from npkit import eventually
from support.aggapi import kubectl
from support.etcd import EtcdServer
from support.lab import start_lab

from aggapi.devlab import Lab

pytestmark = pytest.mark.slow

UD = """\
apiVersion: edge.aggapi.io/v1alpha1
kind: UnitedDeployment
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  nodepoolSelector: {matchLabels: {nodepool.openyurt.io/type: edge}}
  workloadTemplate:
    deploymentTemplate:
      metadata: {labels: {app: web}}
      spec:
        replicas: 1
        template:
          metadata: {labels: {app: web}}
          spec: {containers: [{name: web, image: nginx:1.27}]}
  workloadTweaks:
  - pools: [hangzhou]
    replicas: 2
"""


@pytest.fixture(scope="module")
def ud_lab(etcd_server: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = start_lab(tmp_path_factory.mktemp("ud-lab"), etcd_server.client_url, nodes=2)
    try:
        yield lab
    finally:
        lab.stop()


def test_ud_across_the_lab_pools(ud_lab: Lab) -> None:
    kc = ud_lab.kubeconfig
    res = kubectl(kc, "apply", "-f", "-", input=UD)
    assert res.returncode == 0, res.stderr

    def both() -> dict[str, Any] | None:
        found = {d["metadata"]["labels"]["apps.openyurt.io/pool-name"]: d for d in workloads(kc) or []}
        return found if set(found) == {"hangzhou", "beijing"} else None

    for pool, d in eventually(both, "a Deployment in each lab pool", timeout=60).items():
        assert d["spec"]["template"]["spec"]["nodeSelector"] == {"apps.openyurt.io/nodepool": pool}
        assert d["spec"]["replicas"] == (2 if pool == "hangzhou" else 1)

    def row() -> list[str] | None:
        res = kubectl(kc, "get", "ud", "web", "-n", "default", "--no-headers")
        return res.stdout.split()[:4] if res.returncode == 0 and res.stdout.split()[1:2] == ["3"] else None

    assert eventually(row, "kubectl get ud shows the total") == ["web", "3", "0", "0"]

    res = kubectl(kc, "delete", "ud", "web", "-n", "default")
    assert res.returncode == 0, res.stderr
    eventually(lambda: workloads(kc) == [], "the garbage collector deleted both", timeout=60)


def workloads(kc: Path) -> list[Any] | None:
    """The UnitedDeployment's Deployments (None if kubectl failed)."""
    res = kubectl(
        kc, "get", "deploy", "-n", "default", "-l", "edge.aggapi.io/uniteddeployment=web", "-o", "json"
    )
    return list(json.loads(res.stdout)["items"]) if res.returncode == 0 else None
