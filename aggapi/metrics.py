"""Prometheus metrics, one registry per server (no process globals, so tests can run several)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "apiserver_request",
            "Requests by verb, resource and HTTP code.",
            ["verb", "resource", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "apiserver_request_duration_seconds",
            "Request latency (watches: until the stream starts).",
            ["verb", "resource"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge("apiserver_current_inflight_requests", "Requests being served.", registry=r)
        self.watchers = Gauge(
            "apiserver_registered_watchers", "Open watches by resource.", ["resource"], registry=r
        )
        self.etcd_latency = Histogram(
            "etcd_request_duration_seconds",
            "etcd request latency by operation.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cert_expiry = Gauge(
            "aggapi_certificate_expiration_timestamp_seconds",
            "notAfter of the certificates this server uses.",
            ["certificate"],
            registry=r,
        )

    def watch_count(self, resource: str, fn: Callable[[], int]) -> None:
        self.watchers.labels(resource).set_function(fn)

    def observe_etcd(self, operation: str, seconds: float) -> None:
        self.etcd_latency.labels(operation).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
