"""The health agent's Prometheus metrics, read from the agent when scraped (a custom collector: the
counters live where the agent already keeps them, nothing is instrumented twice)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edge.health.agent import HealthAgent

PREFIX = "aggapi_edge_health_"


class AgentCollector(Collector):
    def __init__(self, agent: HealthAgent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        a = self.agent
        yield CounterMetricFamily(PREFIX + "probe_periods", "Probe periods run.", value=a.periods)
        yield CounterMetricFamily(
            PREFIX + "probes", "Direct and indirect probe requests sent to peers.", value=a.probes_sent
        )
        yield GaugeMetricFamily(PREFIX + "members", "Pool peers this node probes.", value=len(a.members))
        verdicts = GaugeMetricFamily(
            PREFIX + "peers", "Pool peers by this node's verdict.", labels=["verdict"]
        )
        counts = Counter(a.hysteresis.verdict(p) for p in a.members)
        for verdict in ("Healthy", "Unhealthy", "Unknown"):
            verdicts.add_metric([verdict], counts.get(verdict, 0))
        yield verdicts
        yield GaugeMetricFamily(
            PREFIX + "suspects",
            "Peers probed again each period until they settle.",
            value=len(a.hysteresis.unsettled()),
        )
        yield CounterMetricFamily(PREFIX + "votes_posted", "Votes the cloud accepted.", value=a.poster.posted)
        yield CounterMetricFamily(
            PREFIX + "vote_post_failures",
            "Vote posts that failed (kept and retried).",
            value=a.poster.failures,
        )
        yield GaugeMetricFamily(
            PREFIX + "votes_pending", "Votes waiting for the cloud (on disk).", value=len(a.store.pending)
        )
        yield CounterMetricFamily(
            PREFIX + "votes_dropped", "Pending votes dropped (the store was full).", value=a.store.dropped
        )
        if a.feed is not None:
            yield CounterMetricFamily(
                PREFIX + "member_reads_failed",
                "Reads of the pool members that failed.",
                value=a.feed.failures,
            )


def registry_for(agent: HealthAgent) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    return registry
