"""Health agent configuration and pool membership (`--peers name=addr,...` or a peers file)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PEER_PORT = 10266
DEFAULT_KUBELET_PORT = 10250
# Sent to kube-apiserver (or the local shadow-apiserver, which caches reads of components named by the
# User-Agent's first token; `aggapi-edge` is among its defaults) when reading members and posting votes.
USER_AGENT = "aggapi-edge/0.1.0 (health-agent)"


@dataclass(frozen=True, slots=True)
class HealthConfig:
    node_name: str
    address: str  # this node's address; the peer endpoint listens here
    cert_file: Path  # CN=system:node:<node>, O=system:nodes; used as server and client certificate
    key_file: Path
    ca_file: Path  # the node CA: peers are verified against it
    # The peer endpoint's certificate when cert_file is not also a server certificate (e.g. the
    # kubelet's serving cert, CN=system:node:<node>); default cert_file/key_file.
    serving_cert_file: Path | None = None
    serving_key_file: Path | None = None
    peers: tuple[tuple[str, str], ...] = ()  # static members (name, address); self is ignored
    peers_file: Path | None = None  # re-read when rewritten; its members replace --peers
    # kube-apiserver (node cert): pool members from the node's NodePool topology, and the default vote URL
    api_server: str = ""
    members_refresh: float = 60.0
    vote_url: str = ""  # with {target}; '' keeps votes local only (or derives it from api_server)
    vote_ca_file: Path | None = None  # CA of the vote server; default ca_file
    state_dir: Path | None = None  # pending votes survive restarts here
    peer_port: int = DEFAULT_PEER_PORT
    kubelet_port: int = DEFAULT_KUBELET_PORT
    period: float = 10.0  # seconds between probe periods
    probe_timeout: float = 2.0
    probes_per_period: int = 3
    indirect_probes: int = 2
    failure_threshold: int = 2  # rounds, each a direct probe and (on failure) indirect ones
    success_threshold: int = 2
    max_pending_votes: int = 1024
    vote_timeout: float = 5.0
    cert_check_interval: float = 10.0
    metrics_bind_address: str = ""  # /metrics and /healthz (plain HTTP); '' = none

    @property
    def effective_vote_url(self) -> str:
        if self.vote_url or not self.api_server:
            return self.vote_url
        return self.api_server.rstrip("/") + "/apis/edge.aggapi.io/v1alpha1/edgenodes/{target}/health"

    def validate(self) -> list[str]:
        errors = []
        if not self.node_name:
            errors.append("--node-name is required")
        if not self.address:
            errors.append("--address is required")
        for name, value in (
            ("--probes-per-period", self.probes_per_period),
            ("--failure-threshold", self.failure_threshold),
            ("--success-threshold", self.success_threshold),
            ("--max-pending-votes", self.max_pending_votes),
        ):
            if value < 1:
                errors.append(f"{name} must be at least 1")
        if self.indirect_probes < 0:
            errors.append("--indirect-probes must not be negative")
        for name, seconds in (
            ("--period", self.period),
            ("--probe-timeout", self.probe_timeout),
            ("--vote-timeout", self.vote_timeout),
            ("--cert-check-interval", self.cert_check_interval),
            ("--members-refresh", self.members_refresh),
        ):
            if seconds <= 0:
                errors.append(f"{name} must be positive")
        if self.vote_url and not self.vote_url.startswith("https://"):
            errors.append("--vote-url must be https:// (votes are signed by the node certificate)")
        for port in (self.peer_port, self.kubelet_port):
            if not 0 < port < 65536:
                errors.append(f"bad port {port}")
        return errors


def parse_peers(text: str) -> dict[str, str]:
    """`name=addr` items separated by commas or newlines; `#` starts a comment. Raises ValueError."""
    peers: dict[str, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0]
        for raw_item in line.split(","):
            item = raw_item.strip()
            if not item:
                continue
            name, sep, addr = item.partition("=")
            name, addr = name.strip(), addr.strip()
            if not sep or not name or not addr:
                raise ValueError(f"bad peer {item!r}: want name=address")
            peers[name] = addr
    return peers


class PeersFile:
    """A peers file that may be rewritten at any time (atomically, or not): read when its stamp changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None

    def read_if_changed(self) -> dict[str, str] | None:
        """The members when the file changed since the last call, else None. Raises OSError/ValueError."""
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return None
        peers = parse_peers(self.path.read_text())
        self._stamp = stamp
        return peers
