"""Prometheus metrics of the inference core, for both adapters; a scrape never touches the state.

The core counts plain integers (it stays framework-neutral). The state's figures come from a `StateWatch`
snapshot, refreshed off the request path every few seconds.

- KServe (one process): `CoreCollector` reads the counters and the snapshot at scrape time.
- Flask under gunicorn: `WorkerMetrics` writes prometheus_client's multiprocess files
  (PROMETHEUS_MULTIPROC_DIR), so a scrape of any worker gives one view: counters summed over the workers,
  state gauges the live workers' max (min for `attribution_state_up`).

State figures carry `scope`: "pod" for the in-process state (sum over pods is right), "state" for Redis, whose
figures are the whole shared state's and the same from every pod, so aggregate them with max, never sum:

    max by (state) (attribution_state_keys{scope="state"})
    sum(attribution_state_keys{scope="pod"})

`attribution_state_stats_capped` is 1 when the Redis key SCAN stopped at its cap (keys and events are then
lower bounds); `attribution_redis_keys` (DBSIZE, exact, every key in the Redis db) and
`attribution_redis_used_memory_bytes` have no cap.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from attribution.inference import Counters, InferenceCore
from serving.guard import Gate, StateSnapshot, StateWatch

COUNTERS = {
    "requests": ("attribution_requests", "Scoring requests answered"),
    "clicks_scored": ("attribution_clicks_scored", "Clicks scored"),
    "bad_requests": ("attribution_bad_requests", "Requests refused as client errors (4xx)"),
    "state_errors": ("attribution_state_errors", "Requests refused because the state was unavailable (503)"),
}
STATE_GAUGES = {  # StoreStats field -> (name, help)
    "events": ("attribution_state_events", "Clicks held in the online state"),
    "keys": ("attribution_state_keys", "Keys (group, key values) held in the online state"),
    "late_events": ("attribution_state_late_events", "Clicks later than --max-clock-skew + --allowed-lateness behind the stream: scored from the retained window, not recorded (since the state began)"),
    "duplicate_clicks": ("attribution_state_duplicate_clicks", "Retried clicks (same click_id) not recorded again (since the state began)"),
}
REDIS_GAUGES = {
    "dbsize": ("attribution_redis_keys", "Keys in the Redis database (DBSIZE)"),
    "used_memory": ("attribution_redis_used_memory_bytes", "Memory Redis reports in use (INFO memory)"),
}
REFUSED = ("attribution_refused", "Predictions refused with 503 by the predictor's own limits (overloaded, deadline)")
UP = ("attribution_state_up", "1 if the online state answered the last ping")
CAPPED = ("attribution_state_stats_capped", "1 if the key SCAN behind the state gauges stopped at its cap")
AGE = ("attribution_state_stats_age_seconds", "Age of the state figures")


def state_labels(watch: StateWatch) -> dict[str, str]:
    if not watch.shared:
        return {"scope": "pod", "state": "memory"}
    store = watch.core.store
    where = store.client.get_connection_kwargs()
    target = f"{where.get('host', where.get('path', '?'))}:{where.get('port', '')}/{where.get('db', 0)}"
    return {"scope": "state", "state": f"{target}/{store.prefix}"}


def _state_families(watch: StateWatch, snap: StateSnapshot) -> Iterator[Metric]:
    labels = state_labels(watch)
    names, values = list(labels), list(labels.values())

    def gauge(name_help: tuple[str, str], value: float) -> GaugeMetricFamily:
        g = GaugeMetricFamily(*name_help, labels=names)
        g.add_metric(values, value)
        return g

    yield gauge(UP, 1.0 if snap.up and watch.down() is None else 0.0)
    if snap.stats is not None:
        for field, name_help in STATE_GAUGES.items():
            yield gauge(name_help, getattr(snap.stats, field))
        yield gauge(CAPPED, 1.0 if snap.capped else 0.0)
    for field, name_help in REDIS_GAUGES.items():
        if field in snap.redis:
            yield gauge(name_help, snap.redis[field])


class CoreCollector(Collector):
    """KServe: the core's counters and the watch's last snapshot, read at scrape time (no I/O)."""

    def __init__(self, core: InferenceCore, watch: StateWatch, gate: Gate | None = None) -> None:
        self.core, self.watch, self.gate = core, watch, gate

    def describe(self) -> list[Metric]:
        return []  # so registering does not call collect()

    def collect(self) -> Iterator[Metric]:
        c = self.core.counters
        for field, (name, doc) in COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=getattr(c, field))
        if self.gate is not None:
            refused = CounterMetricFamily(*REFUSED, labels=["reason"])
            for reason, n in self.gate.refused.items():
                refused.add_metric([reason], n)
            yield refused
        yield from _state_families(self.watch, self.watch.snapshot)


def register_core(core: InferenceCore, watch: StateWatch, registry: CollectorRegistry,
                  gate: Gate | None = None) -> CoreCollector:
    collector = CoreCollector(core, watch, gate)
    registry.register(collector)
    return collector


class WorkerMetrics:
    """Flask under gunicorn: this worker's share of the multiprocess files. Counters advance by the core's
    counts since the last sync; the state gauges are set from the watch."""

    def __init__(self, watch: StateWatch, registry: CollectorRegistry | None = None) -> None:
        """`registry`: only outside gunicorn (no PROMETHEUS_MULTIPROC_DIR), where one process is the view."""
        self.watch, self.registry = watch, registry
        self.labels = state_labels(watch)
        self._counters = {f: Counter(name, doc, registry=registry) for f, (name, doc) in COUNTERS.items()}
        self._seen = Counters()
        names = list(self.labels)
        self._gauges = {f: Gauge(n, d, names, registry=registry, multiprocess_mode="livemax")
                        for f, (n, d) in {**STATE_GAUGES, **REDIS_GAUGES, "capped": CAPPED}.items()}
        self._up = Gauge(*UP, names, registry=registry, multiprocess_mode="livemin")
        self.latency = Histogram(
            "attribution_http_request_seconds", "Flask request latency", ["route", "status"], registry=registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )

    def sync(self, counters: Counters) -> None:
        for f, counter in self._counters.items():
            now, seen = getattr(counters, f), getattr(self._seen, f)
            if now > seen:
                counter.inc(now - seen)
                setattr(self._seen, f, now)
        snap = self.watch.snapshot
        self._up.labels(**self.labels).set(1.0 if snap.up and self.watch.down() is None else 0.0)
        if snap.stats is not None:
            for f in STATE_GAUGES:
                self._gauges[f].labels(**self.labels).set(getattr(snap.stats, f))
            self._gauges["capped"].labels(**self.labels).set(1.0 if snap.capped else 0.0)
        for f, v in snap.redis.items():
            self._gauges[f].labels(**self.labels).set(v)


    def exposition(self) -> bytes:
        """Every worker's metrics as one (prometheus_client's multiprocess collector), or this process's."""
        if self.registry is not None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
