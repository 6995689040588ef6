"""The Node object a simulated edge node registers (the lab posts it to the devcluster)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from edge.kubelet_sim.config import KUBELET_PORT, NodeIdentity, utcnow

SIM_KUBELET_VERSION = "v1.37.0-kubeletsim"


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def node_object(
    node: NodeIdentity,
    *,
    labels: Mapping[str, str] | None = None,
    ready: bool = True,
    now: datetime | None = None,
    kubelet_port: int = KUBELET_PORT,
) -> dict[str, Any]:
    """A core/v1 Node as JSON. kube-apiserver reaches the kubelet at the InternalIP and
    status.daemonEndpoints.kubeletEndpoint.Port, so those two fields are what routing depends on."""
    t = _ts(now or utcnow())
    all_labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        **(labels or {}),
    }
    condition = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "KubeletReady" if ready else "KubeletNotReady",
        "message": "kubelet is posting ready status" if ready else "kubelet is not ready",
        "lastHeartbeatTime": t,
        "lastTransitionTime": t,
    }
    capacity = {"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "20Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": all_labels},
        "spec": {},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node.address},
                {"type": "Hostname", "address": node.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
            "conditions": [condition],
            "capacity": capacity,
            "allocatable": dict(capacity),
            "nodeInfo": {
                "kubeletVersion": SIM_KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "kubeletsim://0.1.0",
                "osImage": "kubelet-sim",
                "kernelVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }
