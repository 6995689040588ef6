"""A simulated kubelet for the lab and tests: the real kubelet's HTTPS API (logs, exec, attach,
port-forward, pods, healthz) on a node's own loopback address, backed by simulated pods."""

from edge.kubelet_sim.config import (
    KUBELET_PORT,
    KubeletSimConfig,
    LogTicker,
    NodeIdentity,
    PodObject,
    PortMapping,
    Timeouts,
)
from edge.kubelet_sim.heartbeat import HeartbeatConfig
from edge.kubelet_sim.logs import append_log
from edge.kubelet_sim.node import node_object
from edge.kubelet_sim.server import KubeletSim

__all__ = [
    "KUBELET_PORT",
    "HeartbeatConfig",
    "KubeletSim",
    "KubeletSimConfig",
    "LogTicker",
    "NodeIdentity",
    "PodObject",
    "PortMapping",
    "Timeouts",
    "append_log",
    "node_object",
]
