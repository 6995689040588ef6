"""The devcluster's garbage-collector stand-in (aggapi/devcluster/gc.py) with owners among its own kinds:
a dependent goes when all its owners are gone (by name, or replaced under another uid); an owner it
cannot resolve, or one live owner among several, keeps it. Owners behind aggregation are covered by
tests/controllers/test_uniteddeployment.py."""

from __future__ import annotations

import time
import uuid
from typing import Any

from support.devcluster import Devcluster

from aggapi.devcluster.labkit import JSONClient


def eventually(fn: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.05)


def ref(api_version: str, kind: str, name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid}


def test_dependents_go_when_all_owners_are_gone(devcluster: Devcluster) -> None:
    dc: JSONClient = devcluster.admin()
    ns = f"gc-{uuid.uuid4().hex[:6]}"
    deploys, pods = f"/apis/apps/v1/namespaces/{ns}/deployments", f"/api/v1/namespaces/{ns}/pods"
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "owner"}, "spec": {}}
    code, owner = dc.request("POST", deploys, deployment)
    assert code == 201, owner
    live = ref("apps/v1", "Deployment", "owner", owner["metadata"]["uid"])

    def pod(name: str, *owners: dict[str, Any]) -> None:
        meta = {"name": name, "ownerReferences": list(owners)}
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": []}}
        code, out = dc.request("POST", pods, body)
        assert code == 201, out

    def gone(name: str) -> bool:
        return dc.get(f"{pods}/{name}")[0] == 404

    pod("owned", live)
    pod("other-uid", ref("apps/v1", "Deployment", "owner", "not-the-uid"))
    pod("unknown-kind", ref("example.com/v1", "Widget", "w", "u-1"))
    pod("one-live", live, ref("apps/v1", "Deployment", "missing", "u-2"))
    eventually(lambda: gone("other-uid"), "the pod whose owner has another uid deleted")
    pod("marker", ref("v1", "ConfigMap", "missing", "u-3"))  # gone ⇒ a whole sweep ran since
    eventually(lambda: gone("marker"), "the marker deleted")
    for name in ("owned", "unknown-kind", "one-live"):
        assert not gone(name), name

    assert dc.request("DELETE", f"{deploys}/owner")[0] == 200
    eventually(lambda: gone("owned") and gone("one-live"), "dependents of the deleted owner deleted")
    assert not gone("unknown-kind")
    dc.request("DELETE", f"{pods}/unknown-kind")
