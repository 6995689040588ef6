"""Configuration of a simulated kubelet. Everything is passed in; nothing is read from the environment."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.kubelet_sim.apiview import PodClientConfig
    from edge.kubelet_sim.heartbeat import HeartbeatConfig

KUBELET_PORT = 10250

PodObject = Mapping[str, Any]
"""A core/v1 Pod as JSON (what the lab reads from the devcluster)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    name: str
    address: str  # the node's own loopback address in the lab, e.g. 127.0.1.3

    @property
    def kubelet_endpoint(self) -> str:
        return f"{self.address}:{KUBELET_PORT}"


@dataclass(frozen=True, slots=True)
class PortMapping:
    """Where `kubectl port-forward <pod> L:<port>` lands. `target` is "host:port"; None makes the sim
    serve a TCP echo server for that pod port itself (the lab's sample pod)."""

    namespace: str
    pod: str
    port: int
    target: str | None = None


@dataclass(frozen=True, slots=True)
class LogTicker:
    """Append a line to a container's log every `interval` seconds, like a chatty sample app."""

    namespace: str
    pod: str
    container: str
    interval: float = 1.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    write: float = 30.0
    # The kubelet's --streaming-connection-idle-timeout default: an idle exec/port-forward is cut after it.
    idle: float = 4 * 3600.0
    dial: float = 10.0
    # How long the SPDY side waits for a client to open all the streams its request announced.
    stream_creation: float = 30.0
    # After an exec'd process exits, how long its output pipes may stay open (held by its children).
    exit_grace: float = 1.0


@dataclass(frozen=True, slots=True)
class KubeletSimConfig:
    """Authorization: any client certificate issued by `client_ca_file` may use every endpoint (the sim
    stands in for a kubelet whose only client is kube-apiserver's kubelet-client identity)."""

    node: NodeIdentity
    tls_cert_file: Path
    tls_key_file: Path
    client_ca_file: Path
    root_dir: Path
    pods: tuple[PodObject, ...] = ()
    port: int = KUBELET_PORT
    port_forwards: tuple[PortMapping, ...] = ()
    log_tickers: tuple[LogTicker, ...] = ()
    log_poll_interval: float = 0.1
    timeouts: Timeouts = field(default_factory=Timeouts)
    clock: Callable[[], datetime] = utcnow
    # $PATH of exec'd commands; a container image's usual one, not the host process's.
    exec_path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # Node Lease and Ready-condition heartbeats to kube-apiserver (heartbeat.py); None: no heartbeats.
    heartbeat: HeartbeatConfig | None = None
    api_view_file: Path | None = None  # with heartbeat: list+watch like kubelet and kube-proxy (apiview.py)
    pod_client: PodClientConfig | None = None  # with api_view_file: a sample in-cluster client too
