"""Counters of the tunnel agent: a plain object the agent updates and anything may read, and the
Prometheus collector that exports them (read at scrape time, so the hot paths only add to ints)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edge.tunnel.protocol import pb

PREFIX = "aggapi_tunnel_agent_"
# Every dial result, so each series exists (at 0) from the first scrape: rate() needs no "first" sample.
DIAL_RESULTS = tuple(name.lower() for name, _ in pb.DialResult.Code.items())


@dataclass(slots=True)
class AgentMetrics:
    sessions_established: int = 0  # Welcomes received, over all servers
    session_failures: int = 0  # connection attempts or sessions that ended in an error
    servers_connected: int = 0
    reconnects: int = 0  # a link dialling its server again (after a failure, an end, or a cert rotation)
    dials: int = 0
    dial_failures: Counter[str] = field(default_factory=Counter)  # by DialResult code name
    connections_active: int = 0
    connections_total: int = 0  # dials whose local connect succeeded (DialResult OK)
    bytes_to_server: int = 0
    bytes_from_server: int = 0
    cert_reloads: int = 0

    def snapshot(self) -> dict[str, int]:
        out = {
            "sessions_established": self.sessions_established,
            "session_failures": self.session_failures,
            "servers_connected": self.servers_connected,
            "reconnects": self.reconnects,
            "dials": self.dials,
            "connections_active": self.connections_active,
            "connections_total": self.connections_total,
            "bytes_to_server": self.bytes_to_server,
            "bytes_from_server": self.bytes_from_server,
            "cert_reloads": self.cert_reloads,
        }
        out.update({f"dial_failures_{code.lower()}": n for code, n in self.dial_failures.items()})
        return out


LinkStates = Callable[[], Iterable[tuple[str, bool]]]  # (server endpoint, session up) for every link


class AgentCollector:
    """Exports an AgentMetrics (and the agent's links) as Prometheus metrics. Register it with a
    per-agent CollectorRegistry: see registry_for()."""

    def __init__(self, metrics: AgentMetrics, links: LinkStates) -> None:
        self._m = metrics
        self._links = links

    def collect(self) -> Iterator[Metric]:
        m = self._m
        connected = GaugeMetricFamily(
            PREFIX + "server_connected",
            "1 while the link to this tunnel server endpoint has a session, 0 while it (re)connects.",
            labels=["server"],
        )
        for endpoint, up in sorted(self._links()):
            connected.add_metric([endpoint], 1.0 if up else 0.0)
        yield connected
        dials = CounterMetricFamily(
            PREFIX + "dials",
            "Dials the servers asked for, by result (ok: the local target accepted; counted when known).",
            labels=["result"],
        )
        failures = {code.lower(): n for code, n in m.dial_failures.items()}
        for result in sorted(set(DIAL_RESULTS) | failures.keys()):
            dials.add_metric([result], m.connections_total if result == "ok" else failures.get(result, 0))
        yield dials
        yield GaugeMetricFamily(
            PREFIX + "connections_active", "Tunnelled connections open now.", value=m.connections_active
        )
        yield CounterMetricFamily(
            PREFIX + "bytes_to_server",
            "Bytes read from local targets and sent to the tunnel servers.",
            value=m.bytes_to_server,
        )
        yield CounterMetricFamily(
            PREFIX + "bytes_from_server",
            "Bytes received from the tunnel servers and written to local targets.",
            value=m.bytes_from_server,
        )
        yield CounterMetricFamily(
            PREFIX + "sessions", "Sessions established (Welcomes received).", value=m.sessions_established
        )
        yield CounterMetricFamily(
            PREFIX + "session_failures",
            "Connection attempts or sessions that ended in an error.",
            value=m.session_failures,
        )
        yield CounterMetricFamily(
            PREFIX + "reconnects",
            "Times a link dialled its server again (after a failure, an end, or a certificate rotation).",
            value=m.reconnects,
        )
        yield CounterMetricFamily(
            PREFIX + "cert_reloads",
            "Times changed certificate files were loaded (each makes every link reconnect).",
            value=m.cert_reloads,
        )


def registry_for(metrics: AgentMetrics, links: LinkStates) -> CollectorRegistry:
    """A registry of its own per agent (no process-global registry, so tests can run several agents)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(AgentCollector(metrics, links))
    return registry
