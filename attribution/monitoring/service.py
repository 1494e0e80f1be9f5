"""`attribution monitor --serve`: postbacks in, live quality and drift out.

    POST /v1/attributions   [{"click_id": 7, "attributed_time": "2017-11-09 10:12:00"}, ...]
                            (or {"attributions": [...]}) -> {"received", "new", "duplicates", "unknown"}
    POST /v1/events         KServe's inference logger (CloudEvents, binary mode): request/response pairs
                            are written to the prediction log, which the monitor reads like the predictor's own
    GET  /v1/metrics        live_metrics.json, computed now (?as_of=EPOCH_SECONDS for a fixed time)
    GET  /metrics           Prometheus text: attribution_live_roc_auc{model=...} and the rest
    GET  /healthz

The monitor reads new files of the prediction log every `poll_seconds`, keeps `retention` of served clicks
and the postbacks; a postback for a click it has not seen yet (the log lags by a file's roll time) is kept
for `unknown_ttl`, at most `max_unknown` of them, then given up and counted. Figures come from the same
`live_metrics` function as the batch command, so both agree exactly on the same inputs. One process holds
the state (gunicorn, one worker, threads); postbacks are appended to `postbacks.jsonl` under --state-dir
when given, and replayed at start, so a restart loses nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from werkzeug.exceptions import HTTPException

from attribution.monitoring.cloudevents import EventError, EventPairs
from attribution.monitoring.live import (
    DEFAULT_HORIZON,
    PostbackError,
    Postbacks,
    live_metrics,
    parse_postbacks,
)
from attribution.monitoring.prediction_log import SCHEMA, SERVED_AT, PredictionLog, filesystem
from attribution.schema import CLICK_ID

log = logging.getLogger(__name__)
MAX_BODY = 32 * 1024 * 1024
DEFAULT_MIN_ROC_AUC = 0.9  # the pipeline's deploy gate default (pipelines/attribution_pipeline.py min_roc_auc)


class Monitor:
    """The service's state; every method is thread-safe."""

    def __init__(
        self, predictions: str, horizon: int = DEFAULT_HORIZON, references: dict[str, dict] | None = None,
        retention: float = 7 * 86400, unknown_ttl: float = 6 * 3600, max_unknown: int = 1_000_000,
        state_dir: str | None = None, logger_model: str | None = None, cache_seconds: float = 15.0,
    ) -> None:
        self.predictions_uri, self.horizon, self.references = predictions, horizon, references or {}
        self.retention, self.unknown_ttl, self.max_unknown = retention, unknown_ttl, max_unknown
        self.cache_seconds = cache_seconds
        self.fs, self.root = filesystem(predictions)
        self.fs.create_dir(self.root, recursive=True)
        self._lock = threading.RLock()
        self._tables: list[pa.Table] = []
        self._files: set[str] = set()
        self._known: set[str] = set()
        self.postbacks = Postbacks()
        self._unknown_since: OrderedDict[str, float] = OrderedDict()
        self.last_postback: float | None = None
        self._cache: tuple[float, dict] | None = None
        only = next(iter(self.references)) if len(self.references) == 1 else None
        self.logger_model = logger_model or only or "kserve-logger"
        self._events = EventPairs()
        self._event_log: PredictionLog | None = None
        self.refresh()
        self._journal = None
        if state_dir:
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            path = Path(state_dir) / "postbacks.jsonl"
            if path.exists():
                self._replay(path)
            self._journal = path.open("a", encoding="utf-8")

    # ---- predictions --------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Read prediction-log files not read yet; drop clicks served before the retention. Returns new rows."""
        selector = pafs.FileSelector(self.root, recursive=True)
        new = sorted(i.path for i in self.fs.get_file_info(selector)
                     if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                     and not i.base_name.startswith(("_", ".")) and i.path not in self._files)
        tables = [pq.read_table(p, filesystem=self.fs, schema=SCHEMA) for p in new]
        cutoff = time.time() - self.retention
        with self._lock:
            self._files.update(new)
            for t in tables:
                self._tables.append(t)
                ids = t.column(CLICK_ID).to_pylist()
                self._known.update(ids)
                for cid in ids:
                    self._unknown_since.pop(cid, None)
            oldest = min((pc.min(t.column(SERVED_AT)).as_py() for t in self._tables if t.num_rows), default=None)
            if oldest is not None and oldest < cutoff:
                merged = pa.concat_tables(self._tables)
                kept = merged.filter(pc.greater_equal(merged.column(SERVED_AT), cutoff))
                self._tables = [kept]
                self._known = set(kept.column(CLICK_ID).to_pylist())
            self._expire_unknown()
            if tables:
                self._cache = None
        return sum(t.num_rows for t in tables)

    def add_event(self, event_id: str, event_type: str, body: object) -> bool:
        """One half of a KServe logger pair; True when it completed a pair (written to the log)."""
        with self._lock:
            pair = self._events.add(event_id, event_type, body)
            if pair is None:
                return False
            if self._event_log is None:
                self._event_log = PredictionLog(self.predictions_uri, self.logger_model, roll_seconds=60.0)
        self._event_log.on_scored(*pair)
        return True

    # ---- postbacks ------------------------------------------------------------------------------------
    def add_postbacks(self, ids: list[str], times: list[int], journal: bool = True) -> dict[str, int]:
        now = time.time()
        with self._lock:
            before = self.postbacks.duplicates
            new = self.postbacks.add(ids, times)
            unknown = 0
            for cid in ids:
                if cid not in self._known and cid not in self._unknown_since:
                    self._unknown_since[cid] = now
                    unknown += 1
            self._expire_unknown()
            if journal and self._journal is not None:
                self._journal.write(json.dumps({"ids": ids, "times": times}) + "\n")
                self._journal.flush()
            self.last_postback = now
            self._cache = None
            return {"received": len(ids), "new": new, "duplicates": self.postbacks.duplicates - before, "unknown": unknown}

    def _replay(self, path: Path) -> None:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                self.add_postbacks(entry["ids"], entry["times"], journal=False)
        log.info("replayed %d postbacks from %s", self.postbacks.received, path)

    def _expire_unknown(self) -> None:
        cutoff = time.time() - self.unknown_ttl
        while self._unknown_since:
            cid, since = next(iter(self._unknown_since.items()))
            if since >= cutoff and len(self._unknown_since) <= self.max_unknown:
                break
            self._unknown_since.popitem(last=False)
            if cid not in self._known and self.postbacks.attributed.pop(cid, None) is not None:
                self.postbacks.dropped_unknown += 1

    # ---- figures ---------------------------------------------------------------------------------------
    def metrics(self, as_of: float | None = None) -> dict:
        with self._lock:
            if as_of is None and self._cache is not None and time.monotonic() - self._cache[0] < self.cache_seconds:
                return self._cache[1]
            table = pa.concat_tables(self._tables) if self._tables else SCHEMA.empty_table()
            snapshot = Postbacks(dict(self.postbacks.attributed), self.postbacks.received, self.postbacks.duplicates,
                                 self.postbacks.dropped_unknown)
        result = live_metrics(table, snapshot, time.time() if as_of is None else as_of, self.horizon, self.references)
        if as_of is None:
            with self._lock:
                self._cache = (time.monotonic(), result)
        return result

    def close(self) -> None:
        if self._event_log is not None:
            self._event_log.close()
        if self._journal is not None:
            self._journal.close()


class MonitorCollector(Collector):
    """Prometheus figures at scrape time (live_metrics cached for `cache_seconds`)."""

    def __init__(self, monitor: Monitor, min_roc_auc: float) -> None:
        self.monitor, self.min_roc_auc = monitor, min_roc_auc

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        m = self.monitor.metrics()
        gauges = {name: GaugeMetricFamily(f"attribution_live_{name}", text, labels=["model"]) for name, text in (
            ("roc_auc", "ROC-AUC of the label-complete rolling 24 h"),
            ("pr_auc", "PR-AUC of the label-complete rolling 24 h"),
            ("log_loss", "Log loss of the label-complete rolling 24 h"),
            ("calibration_ratio", "Predicted / observed positives over the rolling 24 h"),
            ("labelled_clicks", "Labelled clicks in the rolling 24 h"),
            ("positives", "Attributed clicks in the rolling 24 h"),
            ("clicks", "Clicks held (within the retention)"),
        )}
        for model, s in m["models"].items():
            r = s["rolling_24h"]
            values = {"roc_auc": r["roc_auc"], "pr_auc": r["pr_auc"], "log_loss": r["log_loss"],
                      "calibration_ratio": (r["calibration"] or {}).get("ratio"), "labelled_clicks": r["labelled"],
                      "positives": r["positives"], "clicks": s["clicks"]}
            for name, v in values.items():
                if v is not None:
                    gauges[name].add_metric([model], float(v))
        yield from gauges.values()
        psi = GaugeMetricFamily("attribution_drift_psi", "PSI against the training reference, latest hour with clicks",
                                labels=["model", "feature"])
        latest: dict[str, dict] = {}
        for row in m["hourly"]:
            if "psi" in row:
                latest[row["model"]] = row
        for model, row in latest.items():
            for feature, v in row["psi"].items():
                psi.add_metric([model, feature], v)
        yield psi
        yield GaugeMetricFamily("attribution_live_min_roc_auc", "The deploy gate's ROC-AUC threshold", value=self.min_roc_auc)
        yield CounterMetricFamily("attribution_postbacks", "Postback items received", value=m["postbacks"])
        yield CounterMetricFamily("attribution_postback_duplicates", "Postbacks for a click already attributed",
                                  value=m["duplicates"])
        yield GaugeMetricFamily("attribution_unknown_click_ids", "Attributed click_ids with no logged prediction",
                                value=m["unknown_click_ids"])
        last = self.monitor.last_postback
        yield GaugeMetricFamily("attribution_last_postback_timestamp_seconds", "When the last postback arrived",
                                value=last if last is not None else 0.0)


def _error(status: int, message: str, **extra: Any) -> Response:
    resp = jsonify({"error": message, **extra})
    resp.status_code = status
    return resp


def create_app(monitor: Monitor, min_roc_auc: float = DEFAULT_MIN_ROC_AUC) -> Flask:
    app = Flask("attribution-monitor")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False
    registry = CollectorRegistry()
    registry.register(MonitorCollector(monitor, min_roc_auc))

    def body() -> Any:
        if request.mimetype != "application/json":
            raise PostbackError(None, None, f"Content-Type must be application/json, got {request.mimetype or 'none'!r}")
        try:
            return json.loads(request.get_data(cache=False))
        except (ValueError, RecursionError) as err:
            raise PostbackError(None, None, f"malformed JSON: {err}") from None

    @app.post("/v1/attributions")
    def attributions() -> Response:
        try:
            data = body()
            if isinstance(data, dict):
                if set(data) != {"attributions"}:
                    raise PostbackError(None, None, "expected [item, ...] or {\"attributions\": [item, ...]}")
                data = data["attributions"]
            ids, times = parse_postbacks(data)
        except PostbackError as err:
            return _error(400, str(err), item=err.index, field=err.field)
        return jsonify(monitor.add_postbacks(ids, times))

    @app.post("/v1/events")
    def events() -> Response:
        event_id, event_type = request.headers.get("ce-id"), request.headers.get("ce-type")
        if not event_id or not event_type:
            return _error(400, "a KServe logger CloudEvent needs ce-id and ce-type headers (binary mode)")
        try:
            return jsonify({"paired": monitor.add_event(event_id, event_type, body())})
        except (EventError, PostbackError) as err:
            return _error(400, str(err))

    @app.get("/v1/metrics")
    def metrics_json() -> Response:
        as_of = request.args.get("as_of")
        try:
            value = float(as_of) if as_of is not None else None
        except ValueError:
            return _error(400, f"as_of must be epoch seconds, got {as_of!r}")
        monitor.refresh()
        return jsonify(monitor.metrics(value))

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ready", "predictions": monitor.predictions_uri})

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        return _error(err.code or 500, f"{err.name}: {err.description}")

    return app


def _poll(monitor: Monitor, seconds: float, stop: threading.Event) -> None:
    while not stop.wait(seconds):
        try:
            monitor.refresh()
        except Exception:  # a storage hiccup must not stop the poller
            log.exception("could not read the prediction log %s", monitor.predictions_uri)


def run_monitor(monitor_args: dict, host: str = "0.0.0.0", port: int = 8081, poll_seconds: float = 30.0,
                min_roc_auc: float = DEFAULT_MIN_ROC_AUC, threads: int = 4) -> None:
    """Serve under gunicorn: one worker (the state is in-process), a few threads, the poller beside it."""
    from gunicorn.app.base import BaseApplication

    class _Server(BaseApplication):
        def load_config(self) -> None:
            for k, v in {"bind": f"{host}:{port}", "workers": 1, "threads": threads, "worker_class": "gthread",
                         "timeout": 120, "graceful_timeout": 20, "control_socket_disable": True,
                         "accesslog": None, "loglevel": "info"}.items():
                self.cfg.set(k, v)

        def load(self) -> Flask:
            monitor = Monitor(**monitor_args)
            stop = threading.Event()
            threading.Thread(target=_poll, args=(monitor, poll_seconds, stop), daemon=True, name="log-poller").start()
            import atexit

            atexit.register(lambda: (stop.set(), monitor.close()))
            return create_app(monitor, min_roc_auc)

    _Server().run()
