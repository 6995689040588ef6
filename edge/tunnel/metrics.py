"""Counters of the tunnel agent: a plain object the agent updates and anything may read (or export)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class AgentMetrics:
    sessions_established: int = 0  # Welcomes received, over all servers
    session_failures: int = 0  # connection attempts or sessions that ended in an error
    servers_connected: int = 0
    dials: int = 0
    dial_failures: Counter[str] = field(default_factory=Counter)  # by DialResult code name
    connections_active: int = 0
    connections_total: int = 0
    bytes_to_server: int = 0
    bytes_from_server: int = 0
    cert_reloads: int = 0

    def snapshot(self) -> dict[str, int]:
        out = {
            "sessions_established": self.sessions_established,
            "session_failures": self.session_failures,
            "servers_connected": self.servers_connected,
            "dials": self.dials,
            "connections_active": self.connections_active,
            "connections_total": self.connections_total,
            "bytes_to_server": self.bytes_to_server,
            "bytes_from_server": self.bytes_from_server,
            "cert_reloads": self.cert_reloads,
        }
        out.update({f"dial_failures_{code.lower()}": n for code, n in self.dial_failures.items()})
        return out
