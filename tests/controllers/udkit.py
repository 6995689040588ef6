"""For the UnitedDeployment tests: a private devcluster (with its garbage-collector stand-in) and a real
`aggapi serve` running the controllers against it, registered as the APIService v1alpha1.edge.aggapi.io
exactly as the lab does, so kubectl and kube's GC reach UnitedDeployments through aggregation. Plus
helpers that play the deployment controller (tests write workload status) and poll (no test asserts on
time)."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npkit import MERGE, controller_args, eventually
from support.aggapi import AggapiServer, kubectl
from support.devcluster import Devcluster
from support.etcd import EtcdServer

from aggapi.devcluster.labkit import JSONClient
from aggapi.devlab import LabPKI
from certs.files import load_or_create_ca, write_pair
from certs.pki import issue_client, issue_serving, service_dns_names

GV = "/apis/edge.aggapi.io/v1alpha1"
NP = f"{GV}/nodepools"
APISERVICE = "v1alpha1.edge.aggapi.io"
SVC_NS, SVC = "aggapi-system", "aggapi"
OWNER_KEYS = ["apiVersion", "blockOwnerDeletion", "controller", "kind", "name", "uid"]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


def aggregated_pki(directory: Path) -> LabPKI:
    """A CA, a serving certificate for the Service name the aggregator dials, an admin client cert."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = load_or_create_ca(directory, "ca", common_name="ud-test-ca")
    pki = LabPKI(
        directory / "ca.crt",
        directory / "serving.crt",
        directory / "serving.key",
        directory / "admin.crt",
        directory / "admin.key",
    )
    names = [*service_dns_names(SVC, SVC_NS), "localhost"]
    write_pair(
        issue_serving(ca, common_name=SVC, dns_names=names, ips=["127.0.0.1"]),
        pki.serving_cert,
        pki.serving_key,
    )
    write_pair(
        issue_client(ca, common_name="admin", organizations=["system:masters"]), pki.admin_cert, pki.admin_key
    )
    return pki


@dataclass
class UDEnv:
    devcluster: Devcluster
    aggapi: AggapiServer
    kubeconfig: Path  # kubectl → the devcluster (admin), UnitedDeployments through aggregation

    @property
    def dc(self) -> JSONClient:
        return self.devcluster.admin()

    @property
    def agg(self) -> JSONClient:
        pki = self.aggapi.pki
        return JSONClient(self.aggapi.url, pki.ca, (pki.admin_cert, pki.admin_key))

    def kubectl(self, *args: str, input: str | None = None) -> Any:
        return kubectl(self.kubeconfig, *args, input=input)


def register(dc: JSONClient, port: int, ca_pem: bytes) -> None:
    """What `kubectl apply -k apiservice/` does for the server side, pointed at this aggapi."""
    meta = {"name": SVC, "namespace": SVC_NS}
    dc.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SVC_NS}})
    dc.apply(
        f"/api/v1/namespaces/{SVC_NS}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]},
        },
    )
    dc.apply(
        f"/api/v1/namespaces/{SVC_NS}/endpoints",
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": meta,
            "subsets": [
                {
                    "addresses": [{"ip": "127.0.0.1"}],
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                }
            ],
        },
    )
    dc.apply(
        "/apis/apiregistration.k8s.io/v1/apiservices",
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {
                "group": "edge.aggapi.io",
                "version": "v1alpha1",
                "groupPriorityMinimum": 1000,
                "versionPriority": 15,
                "service": {"namespace": SVC_NS, "name": SVC, "port": 443},
                "caBundle": base64.b64encode(ca_pem).decode(),
            },
        },
    )


def start_ud_env(etcd: EtcdServer, work: Path) -> UDEnv:
    dc = Devcluster(work / "devcluster", etcd.client_url)
    dc.start()
    try:
        kc = dc.kubeconfig(work / "devcluster.kubeconfig")
        pki = aggregated_pki(work / "pki")
        args = (
            *controller_args(kc, "ud-controllers"),
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
        )
        server = AggapiServer(pki, etcd.client_url, work / "aggapi", extra_args=args)
        server.start()
    except BaseException:
        dc.stop()
        raise
    env = UDEnv(dc, server, kc)
    try:
        register(env.dc, server.port, pki.ca.read_bytes())
        eventually(lambda: env.dc.get(f"{GV}/uniteddeployments")[0] == 200, "uniteddeployments served")
    except BaseException:
        stop_ud_env(env)
        raise
    return env


def stop_ud_env(env: UDEnv) -> None:
    env.aggapi.stop()
    env.devcluster.stop()


# ---- objects ------------------------------------------------------------------------------------------


def create_pool(env: UDEnv, name: str, labels: dict[str, str] | None = None, **spec: Any) -> None:
    body = {
        "apiVersion": "edge.aggapi.io/v1alpha1",
        "kind": "NodePool",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }
    code, out = env.agg.request("POST", NP, body)
    assert code == 201, out


def patch_pool(env: UDEnv, name: str, patch: dict[str, Any]) -> None:
    code, out = env.agg.request("PATCH", f"{NP}/{name}", patch, headers=MERGE)
    assert code == 200, out


def ud_manifest(name: str, *, image: str = "nginx:1.27", replicas: int = 2, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "edge.aggapi.io/v1alpha1",
        "kind": "UnitedDeployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "workloadTemplate": {
                "deploymentTemplate": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "replicas": replicas,
                        "template": {
                            "metadata": {"labels": {"app": name}},
                            "spec": {"containers": [{"name": "web", "image": image}]},
                        },
                    },
                }
            },
            **spec,
        },
    }


def uds(ns: str) -> str:
    return f"{GV}/namespaces/{ns}/uniteddeployments"


def deploys(ns: str) -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments"


def create_ud(env: UDEnv, ns: str, body: dict[str, Any]) -> dict[str, Any]:
    code, out = env.agg.request("POST", uds(ns), body)
    assert code == 201, out
    result: dict[str, Any] = out
    return result


def get_ud(env: UDEnv, ns: str, name: str) -> dict[str, Any]:
    code, out = env.agg.get(f"{uds(ns)}/{name}")
    assert code == 200, out
    result: dict[str, Any] = out
    return result


def patch_ud(env: UDEnv, ns: str, name: str, patch: dict[str, Any]) -> None:
    code, out = env.agg.request("PATCH", f"{uds(ns)}/{name}", patch, headers=MERGE)
    assert code == 200, out


def workload(env: UDEnv, ns: str, name: str) -> dict[str, Any] | None:
    code, out = env.dc.get(f"{deploys(ns)}/{name}")
    if code == 404:
        return None
    assert code == 200, out
    result: dict[str, Any] = out
    return result


def condition(ud: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in (ud.get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            result: dict[str, Any] = c
            return result
    return {}


def roll_out(env: UDEnv, ns: str, name: str) -> None:
    """Play kube's deployment controller: the Deployment's current spec is fully rolled out."""
    d = workload(env, ns, name)
    assert d is not None, name
    n = d["spec"]["replicas"]
    status = {
        "observedGeneration": d["metadata"]["generation"],
        "replicas": n,
        "updatedReplicas": n,
        "readyReplicas": n,
        "availableReplicas": n,
    }
    code, out = env.dc.request("PATCH", f"{deploys(ns)}/{name}/status", {"status": status}, headers=MERGE)
    assert code == 200, out


def wait_condition(
    env: UDEnv, ns: str, name: str, kind: str, status: str, reason: str = "", message: str = ""
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        c = condition(get_ud(env, ns, name), kind)
        ok = c.get("status") == status and reason in ("", c.get("reason")) and message in c.get("message", "")
        return c if ok else None

    return eventually(probe, f"{ns}/{name} {kind}={status} {reason} {message!r}")
