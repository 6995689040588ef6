"""The shadow's Prometheus metrics, in a registry of their own (several shadows can run in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

PREFIX = "aggapi_shadow_"


class ShadowMetrics:
    def __init__(self, cache_objects: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            PREFIX + "requests",
            "Requests by client component, verb and where the answer came from "
            "(remote: kube-apiserver; cache: the disk cache offline; local: a write accepted offline).",
            ["component", "verb", "served_from"],
            registry=r,
        )
        self.cloud_healthy = Gauge(
            PREFIX + "cloud_healthy", "1 while kube-apiserver is reachable and requests go to it.", registry=r
        )
        self.cache_objects = Gauge(PREFIX + "cache_objects", "Objects in the disk cache.", registry=r)
        self.cache_objects.set_function(lambda: float(cache_objects()))
        self.inflight = Gauge(PREFIX + "inflight_requests", "Non-watch requests being served.", registry=r)
        self.rejected = Counter(
            PREFIX + "rejected_requests", "Requests answered 429 (max in-flight reached).", registry=r
        )
        self.protobuf_passthrough = Counter(
            PREFIX + "protobuf_passthrough",
            "Reads of cached components that accepted only protobuf: proxied, not cached.",
            ["component"],
            registry=r,
        )
        self.reconnects = Counter(
            PREFIX + "reconnects", "Times the cloud came back and caches were relisted.", registry=r
        )
        self.local_writes = Counter(
            PREFIX + "local_writes",
            "Writes accepted offline, by what happened to them upstream.",
            ["result"],
            registry=r,
        )
        self.cert_reloads = Counter(PREFIX + "cert_reloads", "Rotated node certificates loaded.", registry=r)
