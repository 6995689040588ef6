"""Configuration records for the tunnel server and its HTTP CONNECT egress (passed in, never from env)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.tunnel.protocol import DEFAULT_AGENT_PORT, DEFAULT_KUBELET_PORT


@dataclass(frozen=True, slots=True)
class TunnelServerConfig:
    """The agent-facing gRPC port (mTLS) and how dials and agent sessions behave.

    `peers` are the agent endpoints (host:port) of the other replicas; every Welcome lists them so agents
    connect to all replicas and any replica can serve any node (see docs: tunnel HA). Listing this
    replica itself is harmless: agents detect the duplicate by `server_id`.
    """

    cert_file: Path
    key_file: Path
    agent_ca_file: Path  # agents' client certificates must chain to this CA
    bind_address: str = "127.0.0.1"
    port: int = DEFAULT_AGENT_PORT  # 0 picks a free port (tests); TunnelServer.port tells which
    allowed_ports: frozenset[int] = frozenset({DEFAULT_KUBELET_PORT})
    peers: tuple[str, ...] = ()
    server_id: str = ""  # default: random per process
    dial_timeout: float = 10.0  # default for dial() when the caller gives none
    hello_timeout: float = 10.0
    node_lookup_timeout: float = 5.0
    control_write_timeout: float = 10.0
    ping_interval: float = 15.0  # an agent silent for 2 intervals is dropped
    max_pending_dials: int = 1024  # per agent: queued Dial messages not yet written
    max_streams_per_agent: int = 4096
    # What one tunnelled connection may have in flight toward us (its HTTP/2 stream window): the most a
    # stalled reader pins in memory here, and per-connection throughput over a WAN is ≈ window / RTT.
    stream_window: int = 256 * 1024
    keepalive_time: float = 20.0  # HTTP/2 pings find dead TCP connections under open streams
    keepalive_timeout: float = 10.0
    shutdown_grace: float = 2.0


@dataclass(frozen=True, slots=True)
class EgressConfig:
    """HTTP CONNECT for kube-apiserver's EgressSelector: a unix socket and/or TLS TCP with client certs."""

    uds_path: Path | None = None  # created mode 0600
    tls_port: int | None = None  # e.g. 8090; None disables the TCP listener
    tls_bind_address: str = "127.0.0.1"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    client_ca_file: Path | None = None  # required with tls_port: clients must present a cert from it
    allowed_names: tuple[str, ...] = ()  # client-cert CNs allowed; empty = any cert from client_ca_file
    request_timeout: float = 10.0  # to receive the CONNECT request head
    handshake_timeout: float = 10.0
    dial_timeout: float = 10.0
    write_timeout: float = 10.0  # answering the CONNECT (status line) to the client
    max_connections: int = 4096
    max_header_bytes: int = 16 * 1024
    cert_reload_interval: float = 10.0  # the TLS certificate and client CA files are re-read this often

    def validate(self) -> list[str]:
        errors: list[str] = []
        if self.uds_path is None and self.tls_port is None:
            errors.append("egress: set a unix socket path, a TLS port, or both")
        if self.cert_reload_interval <= 0:
            errors.append("egress: the certificate reload interval must be positive")
        if self.tls_port is not None:
            errors.extend(
                f"egress: --{flag} is required with the TLS egress port"
                for flag, value in (
                    ("egress-tls-cert-file", self.tls_cert_file),
                    ("egress-tls-private-key-file", self.tls_key_file),
                    ("egress-client-ca-file", self.client_ca_file),
                )
                if value is None
            )
        return errors


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What the API shows about a node's tunnel (edgenodes' TUNNEL column and status)."""

    node: str
    connected_since: float  # unix time
    agent_version: str
    addresses: tuple[str, ...]
    rejected_addresses: tuple[str, ...] = ()
    active_connections: int = 0
