"""Shared by the NodePool controller tests: a real `aggapi serve` whose controllers use the session
devcluster, Node objects there, and polling helpers (no test asserts on time)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from support.aggapi import NP, AggapiServer
from support.devcluster import Devcluster
from support.etcd import EtcdServer

from aggapi.devcluster.labkit import JSONClient
from aggapi.devlab import LabPKI
from edge.kubelet_sim import NodeIdentity, node_object

POOL_LABEL = "apps.openyurt.io/nodepool"
PREVIOUS = "nodepool.openyurt.io/previous-attributes"
MERGE = {"Content-Type": "application/merge-patch+json"}
T = TypeVar("T")


def controller_args(kubeconfig: Path, lease: str) -> tuple[str, ...]:
    return (
        f"--kubeconfig={kubeconfig}",
        "--tunnel-port=0",
        f"--leader-elect-resource-name={lease}",
        "--leader-elect-lease-duration=3s",
        "--leader-elect-renew-deadline=2s",
        "--leader-elect-retry-period=250ms",
        # These tests check the autonomy annotation alone: no default edge tolerations (docs/health.md).
        "--health-eviction=false",
    )


@dataclass
class NPEnv:
    aggapi: AggapiServer
    devcluster: Devcluster
    kubeconfig: Path  # kubectl → aggapi directly (admin)
    workdir: Path

    @property
    def dc(self) -> JSONClient:
        return self.devcluster.admin()

    @property
    def agg(self) -> JSONClient:
        pki = self.aggapi.pki
        return JSONClient(self.aggapi.url, pki.ca, (pki.admin_cert, pki.admin_key))


def start_np_aggapi(
    etcd: EtcdServer, pki: LabPKI, devcluster: Devcluster, work: Path, *, lease: str, prefix: str = ""
) -> NPEnv:
    kubeconfig = devcluster.kubeconfig(work / "devcluster.kubeconfig")
    kw: dict[str, Any] = {"prefix": prefix} if prefix else {}
    server = AggapiServer(
        pki, etcd.client_url, work / "aggapi", extra_args=controller_args(kubeconfig, lease), **kw
    )
    server.start()
    return NPEnv(server, devcluster, server.kubeconfig(work / "aggapi.kubeconfig"), work)


def eventually(fn: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what} (last: {last!r})")
        time.sleep(0.05)


def make_node(env: NPEnv, name: str, address: str, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    obj = node_object(NodeIdentity(name, address), labels=labels)
    obj["metadata"].update(extra.get("metadata", {}))
    if "spec" in extra:
        obj["spec"] = extra["spec"]
    return env.dc.apply("/api/v1/nodes", obj)


def get_node(env: NPEnv, name: str) -> dict[str, Any]:
    code, obj = env.dc.get(f"/api/v1/nodes/{name}")
    assert code == 200, obj
    result: dict[str, Any] = obj
    return result


def patch_node(env: NPEnv, name: str, patch: dict[str, Any], sub: str = "") -> None:
    path = f"/api/v1/nodes/{name}" + (f"/{sub}" if sub else "")
    code, out = env.dc.request("PATCH", path, patch, headers=MERGE)
    assert code == 200, out


def set_ready(env: NPEnv, name: str, ready: bool) -> None:
    node = get_node(env, name)
    conds = [c for c in node["status"].get("conditions", []) if c["type"] != "Ready"]
    conds.append({"type": "Ready", "status": "True" if ready else "False", "reason": "Test"})
    patch_node(env, name, {"status": {"conditions": conds}}, sub="status")


def delete_node(env: NPEnv, name: str) -> None:
    env.dc.request("DELETE", f"/api/v1/nodes/{name}")


def pool_status(env: NPEnv, name: str) -> dict[str, Any]:
    code, obj = env.agg.get(f"{NP}/{name}")
    assert code == 200, obj
    status: dict[str, Any] = obj.get("status") or {}
    return status
