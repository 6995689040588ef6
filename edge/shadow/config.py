"""The shadow-apiserver's configuration record (built by the CLI or by a lab; never read from env)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edge.shadow.filters.config import MASTER_SERVICE, FiltersConfig

DEFAULT_COMPONENTS = ("kubelet", "kube-proxy", "coredns", "flanneld", "aggapi-edge")
DEFAULT_BIND_ADDRESS = "127.0.0.1"
WILDCARDS = ("0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class ShadowConfig:
    node_name: str
    servers: tuple[str, ...]  # https://host:port of kube-apiserver(s), tried in order (failover)
    ca_file: Path  # verifies kube-apiserver
    cert_file: Path  # the node's client cert (the kubelet's, CN=system:node:<node>); re-read when it changes
    key_file: Path
    cache_dir: Path
    bind_address: str = DEFAULT_BIND_ADDRESS  # the HTTP and health ports (HTTP: the node's credentials)
    port: int = 10261  # plain HTTP (loopback only)
    secure_port: int = 10268  # HTTPS with tls_cert_file/tls_private_key_file; 0 disables
    tls_cert_file: Path | None = None
    tls_private_key_file: Path | None = None
    health_port: int = 10267  # /healthz /readyz /metrics; 0 disables
    components: tuple[str, ...] = DEFAULT_COMPONENTS  # "*" = every client
    probe_period: float = 10.0
    probe_timeout: float = 2.0
    unhealthy_after: int = 3
    healthy_after: int = 2
    max_requests_inflight: int = 250  # non-watch requests; 0 = no limit
    request_timeout: float = 60.0  # one upstream non-watch request
    connect_timeout: float = 3.0  # reaching one upstream server, TCP + TLS (then the next; then the cache)
    bookmark_interval: float = 30.0  # offline watches with allowWatchBookmarks=true
    cert_check_interval: float = 10.0
    fsync: bool = True  # fsync each cache file before it replaces the old one
    # The object filters (docs/shadow-filters.md); None = no filtering (the in-process default, so
    # callers that pass filters themselves keep working). The CLI always sets one.
    filters: FiltersConfig | None = None
    # The HTTPS port's address; "" = `secure_address` decides (docs/shadow.md, "Addresses").
    secure_bind_address: str = ""

    @property
    def masterservice(self) -> FiltersConfig | None:
        """The filters, when masterservice is on (it points pods at `master_host:master_port`)."""
        f = self.filters
        return f if f is not None and MASTER_SERVICE in f.enabled else None

    @property
    def secure_address(self) -> str:
        """Where the HTTPS port listens: --secure-bind-address; else the master-service host when the
        masterservice filter is on and --bind-address is the loopback default (pods cannot reach the
        host's loopback: the filter's address is what they use); else --bind-address (where it listened
        before the two were separate, so a deployment that moved --bind-address keeps its listener)."""
        if self.secure_bind_address:
            return self.secure_bind_address
        ms = self.masterservice
        if ms is not None and self.bind_address == DEFAULT_BIND_ADDRESS:
            return ms.master_host
        return self.bind_address

    def advertised_unserved(self) -> str:
        """Why pods sent to the masterservice address would not reach the HTTPS port, or ""."""
        ms = self.masterservice
        if ms is None or not self.secure_port:
            return ""
        if self.secure_address not in (ms.master_host, *WILDCARDS):
            return (
                f"the masterservice filter points pods at {ms.master_host}:{ms.master_port} but the HTTPS "
                f"port listens on {self.secure_address}:{self.secure_port}; set --secure-bind-address="
                f"{ms.master_host} (the address must exist on this host, e.g. on a dummy interface), or "
                f"--master-service-host to the address pods reach the HTTPS port on"
            )
        return ""

    def validate(self) -> list[str]:
        errors: list[str] = []
        if not self.node_name:
            errors.append("--node-name is required")
        if not self.servers:
            errors.append("at least one --server https://host:port is required")
        for s in self.servers:
            u = urlsplit(s)
            if u.scheme not in ("https", "http") or not u.hostname:
                errors.append(f"--server {s!r}: want https://host:port")
        if self.secure_port and not (self.tls_cert_file and self.tls_private_key_file):
            errors.append(
                "--secure-port needs --tls-cert-file and --tls-private-key-file (or --secure-port=0)"
            )
        if not self.components:
            errors.append("--cache-agents must name at least one component (or '*')")
        if self.unhealthy_after < 1 or self.healthy_after < 1:
            errors.append("--unhealthy-after and --healthy-after must be at least 1")
        if self.probe_period <= 0 or self.probe_timeout <= 0:
            errors.append("--probe-period and --probe-timeout must be positive")
        if self.connect_timeout <= 0 or self.request_timeout <= 0:
            errors.append("--connect-timeout and --request-timeout must be positive")
        if self.max_requests_inflight < 0:
            errors.append("--max-requests-inflight must not be negative")
        if self.secure_bind_address and self.advertised_unserved():  # chosen explicitly: a mistake
            errors.append(self.advertised_unserved())
        if self.filters is not None:
            errors.extend(f"filters: {e}" for e in self.filters.validate())
            if self.filters.node_name and self.filters.node_name != self.node_name:
                errors.append(
                    f"filters: node name {self.filters.node_name!r} is not --node-name {self.node_name!r}"
                )
        return errors
