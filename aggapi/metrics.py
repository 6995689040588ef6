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

        self.queue_depth_gauge = Gauge(
            "workqueue_depth", "Keys waiting in a controller work queue.", ["name"], registry=r
        )
        self.queue_adds = Counter("workqueue_adds", "Keys added to a work queue.", ["name"], registry=r)
        self.reconciles = Counter(
            "aggapi_controller_reconcile",
            "Reconciles by controller and result (success, error, requeue).",
            ["controller", "result"],
            registry=r,
        )
        self.reconcile_latency = Histogram(
            "aggapi_controller_reconcile_duration_seconds",
            "Time one reconcile took.",
            ["controller"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.leader = Gauge(
            "aggapi_leader_election_master_status",
            "1 while this replica holds the lease, else 0.",
            ["name"],
            registry=r,
        )

    # ---- controllers (aggapi.controllers: QueueObserver, ReconcileObserver, LeaderObserver) ---------

    def queue_depth(self, queue: str, depth: int) -> None:
        self.queue_depth_gauge.labels(queue).set(depth)

    def queue_add(self, queue: str) -> None:
        self.queue_adds.labels(queue).inc()

    def reconciled(self, controller: str, result: str, seconds: float) -> None:
        self.reconciles.labels(controller, result).inc()
        self.reconcile_latency.labels(controller).observe(seconds)

    def leading(self, name: str, leading: bool) -> None:
        self.leader.labels(name).set(1 if leading else 0)

    def watch_count(self, resource: str, fn: Callable[[], int]) -> None:
        self.watchers.labels(resource).set_function(fn)

    def observe_etcd(self, operation: str, seconds: float) -> None:
        self.etcd_latency.labels(operation).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
