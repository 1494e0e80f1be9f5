"""Prometheus metrics of the inference core, for both adapters.

The core counts plain integers (it stays framework-neutral); `CoreCollector` exposes them at scrape time with
the state's size, read from the store (cached for a few seconds: a Redis SCAN is not free).
KServe already records request latency (request_predict_seconds etc.); the Flask app adds its own histogram.
With several gunicorn workers each worker reports its own counters (scrape per pod, or use Redis state's
shared figures: events, keys, late and duplicate clicks are the store's, shared by all replicas)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from attribution.features.online.state import StateUnavailable, StoreStats
from attribution.inference import InferenceCore


class CoreCollector(Collector):
    def __init__(self, core: InferenceCore, stats_ttl: float | None = None) -> None:
        from attribution.features.online.state import MemoryStore

        self.core = core
        # In-process stats are one compiled pass over the slots; Redis stats are a SCAN, worth caching between scrapes.
        self.stats_ttl = stats_ttl if stats_ttl is not None else (0.0 if isinstance(core.store, MemoryStore) else 5.0)
        self._stats: tuple[float, StoreStats | None] = (0.0, None)

    def _store_stats(self) -> StoreStats | None:
        at, stats = self._stats
        if stats is None or time.monotonic() - at > self.stats_ttl:
            try:
                stats = self.core.stats()
            except StateUnavailable:
                stats = None
            self._stats = (time.monotonic(), stats)
        return stats

    def describe(self) -> list[Metric]:
        return []  # so registering does not call collect() (and cache empty stats)

    def collect(self) -> Iterator[Metric]:
        c = self.core.counters
        yield CounterMetricFamily("attribution_requests", "Scoring requests answered", value=c.requests)
        yield CounterMetricFamily("attribution_clicks_scored", "Clicks scored", value=c.clicks_scored)
        yield CounterMetricFamily("attribution_bad_requests", "Requests refused as client errors (4xx)", value=c.bad_requests)
        yield CounterMetricFamily("attribution_state_errors", "Requests refused because the state was unavailable (503)", value=c.state_errors)
        stats = self._store_stats()
        yield GaugeMetricFamily("attribution_state_up", "1 if the online state answered the last scrape", value=0 if stats is None else 1)
        if stats is not None:
            yield GaugeMetricFamily("attribution_state_events", "Clicks held in the online state", value=stats.events)
            yield GaugeMetricFamily("attribution_state_keys", "Keys (group, key values) held in the online state", value=stats.keys)
            yield CounterMetricFamily("attribution_late_events", "Clicks later than --max-clock-skew + --allowed-lateness behind the stream: scored from the retained window, not recorded", value=stats.late_events)
            yield CounterMetricFamily("attribution_duplicate_clicks", "Retried clicks (same click_id) not recorded again", value=stats.duplicate_clicks)


def register_core(core: InferenceCore, registry: CollectorRegistry) -> CoreCollector:
    collector = CoreCollector(core)
    registry.register(collector)
    return collector


def request_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "attribution_http_request_seconds", "Flask request latency", ["route", "status"], registry=registry,
        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    )
