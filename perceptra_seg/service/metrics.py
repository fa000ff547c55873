"""Prometheus metrics of one app instance (own registry, so several apps in one process never collide).

Exported series (all prefixed ``segmentor_``):

====================================  =========  =============================================================
``http_requests_total``               counter    by ``method``, ``route`` (template), ``status``
``http_request_duration_seconds``     histogram  by ``method``, ``route``
``inference_stage_seconds``           histogram  by ``stage``: ``decode_image``, ``encode``, ``decode_masks``,
                                                 ``outputs``
``embedding_cache_hits_total``        counter    read from the Segmentor's cache at scrape time
``embedding_cache_misses_total``      counter
``embedding_cache_evictions_total``   counter
``embedding_cache_bytes``             gauge      bytes of embeddings held (``..._max_bytes``: the bound)
``embedding_cache_entries``           gauge
``queue_depth``                       gauge      requests admitted and waiting for an inference slot
``inflight_requests``                 gauge      inference calls running now
``model_loaded``                      gauge      1 once the model is loaded and warmed up
====================================  =========  =============================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..utils.cache import CacheStats

__all__ = ["CONTENT_TYPE_LATEST", "STAGES", "ServiceMetrics"]

#: Inference stages timed per request, in pipeline order.
STAGES = ("decode_image", "encode", "decode_masks", "outputs")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _CacheCollector(Collector):
    """Reads the embedding cache counters when Prometheus scrapes (nothing to keep in sync)."""

    def __init__(self) -> None:
        self.source: Callable[[], CacheStats] | None = None

    def collect(self) -> Iterator[Metric]:
        if self.source is None:
            return
        stats = self.source()
        for name, value in (("hits", stats.hits), ("misses", stats.misses), ("evictions", stats.evictions)):
            yield CounterMetricFamily(f"segmentor_embedding_cache_{name}", f"embedding cache {name}", value=value)
        yield GaugeMetricFamily("segmentor_embedding_cache_bytes", "bytes of cached embeddings", value=stats.bytes)
        yield GaugeMetricFamily(
            "segmentor_embedding_cache_max_bytes", "byte bound of the embedding cache", value=stats.max_bytes
        )
        yield GaugeMetricFamily("segmentor_embedding_cache_entries", "cached embeddings", value=stats.entries)


class ServiceMetrics:
    """The metric objects of one app; :meth:`render` produces the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "segmentor_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "segmentor_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_latency = Histogram(
            "segmentor_inference_stage_seconds",
            "inference latency by stage",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "segmentor_queue_depth", "requests waiting for an inference slot", registry=self.registry
        )
        self.inflight = Gauge("segmentor_inflight_requests", "inference calls running", registry=self.registry)
        self.model_loaded = Gauge(
            "segmentor_model_loaded", "1 when the model is loaded and warmed up", registry=self.registry
        )
        self._cache = _CacheCollector()
        self.registry.register(self._cache)

    def bind_cache(self, source: Callable[[], CacheStats]) -> None:
        """Export the embedding cache counters of the loaded Segmentor (``source`` = ``Segmentor.cache_stats``)."""
        self._cache.source = source

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_latency.labels(method, route).observe(seconds)

    def observe_stages(self, stages: dict[str, float]) -> None:
        for stage, seconds in stages.items():
            self.stage_latency.labels(stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
