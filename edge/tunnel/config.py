"""The tunnel agent's configuration record (built by the CLI or by `aggapi dev`; never read from env)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from edge.tunnel.protocol import DEFAULT_KUBELET_PORT, canonical_host, split_hostport

AGENT_VERSION = "0.1.0"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    node_name: str
    servers: tuple[str, ...]  # host:port of tunnel servers; more are learned from Welcome.peers
    cert_file: Path  # client cert CN=system:node:<node_name>, O=system:nodes; re-read when it changes
    key_file: Path
    ca_file: Path  # verifies the servers' certificates
    addresses: tuple[str, ...]  # the node's IPs; the first is the primary (what a dial by node name reaches)
    allow: tuple[tuple[str, int], ...] = ()  # what may be dialled; default: every address on the kubelet port
    max_connections: int = 256
    server_name: str = ""  # TLS name expected in the servers' certificates, if not the host dialled
    follow_peers: bool = True  # also connect to the replicas each server lists (HA)
    connect_timeout: float = 10.0  # TLS + Hello/Welcome with one server
    write_timeout: float = 10.0  # a control message or a stream's first frame
    max_dial_timeout: float = 30.0  # cap on the server-requested local dial timeout
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    cert_check_interval: float = 10.0
    drain_timeout: float = 3600.0  # after a cert rotation, old connections may finish on the old TLS link
    stream_window: int = 256 * 1024  # per connection in flight toward the agent (memory vs WAN throughput)
    keepalive_time: float = 20.0  # below common NAT idle timeouts, and detects dead servers
    keepalive_timeout: float = 10.0
    metrics_bind_address: str = ""  # host:port serving /metrics and /healthz; "" serves nothing
    version: str = AGENT_VERSION

    def targets(self) -> frozenset[tuple[str, int]]:
        if self.allow:
            return frozenset((canonical_host(h), p) for h, p in self.allow)
        return frozenset((canonical_host(a), DEFAULT_KUBELET_PORT) for a in self.addresses)

    def validate(self) -> list[str]:
        errors: list[str] = []
        if not self.node_name:
            errors.append("--node-name is required")
        if not self.servers:
            errors.append("at least one --server host:port is required")
        for s in self.servers:
            try:
                split_hostport(s)
            except ValueError as e:
                errors.append(f"--server: {e}")
        if not self.addresses:
            errors.append("at least one --address is required (the node's IP, as on its Node object)")
        for a in self.addresses:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                errors.append(f"--address {a!r} is not an IP address")
        if self.max_connections < 1:
            errors.append("--max-connections must be at least 1")
        if not 0 < self.backoff_initial <= self.backoff_max:
            errors.append("backoff: need 0 < initial <= max")
        if self.metrics_bind_address:
            try:
                listen_address(self.metrics_bind_address)
            except ValueError as e:
                errors.append(f"--metrics-bind-address: {e}")
        return errors


def listen_address(value: str) -> tuple[str, int]:
    """`host:port` to listen on (`[v6]:port` for IPv6); unlike a dial target, port 0 (any free port) is
    allowed."""
    value = value.strip()
    if value.endswith(":0"):
        return split_hostport(value[:-1] + "1")[0], 0
    return split_hostport(value)
