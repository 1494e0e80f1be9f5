"""The prediction log: every served prediction as rows of rolling Parquet files, written off the request path.

    plog = PredictionLog("gs://bucket/predictions", model_id("/mnt/models"))
    core.on_scored = plog.on_scored       # called after scoring; fills made click_ids in for clicks without one
    ...
    plog.close()                          # drains the queue and closes the current file (SIGTERM, atexit)

The request thread only puts (arrays it already holds) on a bounded queue; a writer thread builds the Parquet
files. A full queue drops that batch from the log (counted in `dropped_clicks`, logged at most every 10 s)
instead of slowing the answer. A file is written once it holds `roll_rows` rows or is `roll_seconds` old,
under a temporary name first (locally) so that readers never see half a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from attribution.schema import CLICK_ID, CLICK_TIME, ID_FIELDS

log = logging.getLogger(__name__)

PROBABILITY = "probability"
MODEL_ID = "model_id"
SERVED_AT = "served_at"
MADE_ID_PREFIX = "m-"  # made click_ids never read as the integers clients send
# Dictionary pages and statistics only where they pay: half the writer's CPU of the defaults, measured here.
WRITE_OPTIONS: dict[str, Any] = {"compression": "snappy", "use_dictionary": ["model_id"],
                                 "write_statistics": ["click_time", "served_at"]}
SCHEMA = pa.schema(
    [pa.field(CLICK_ID, pa.string()), *(pa.field(f, pa.int64()) for f in ID_FIELDS),
     pa.field(CLICK_TIME, pa.int64()), pa.field(PROBABILITY, pa.float64()), pa.field(MODEL_ID, pa.string()),
     pa.field(SERVED_AT, pa.float64())]
)  # click_time: epoch seconds; served_at: epoch seconds (float) of the answer


def model_id(model_dir: str | Path) -> str:
    """spec hash + model version: the version is the booster file's content hash, so a retrained model with
    the same spec is another model, and the same files copied elsewhere are the same one."""
    import json

    from attribution import storage
    from attribution.model.bundle import MODEL_FILE, SPEC_FILE

    spec_hash = json.loads(storage.read_text(storage.join(model_dir, SPEC_FILE)))["hash"]
    digest = hashlib.sha256(storage.read_bytes(storage.join(model_dir, MODEL_FILE))).hexdigest()[:12]
    return f"{spec_hash}:{digest}"


class _MadeIds:
    """Made click_ids: "m-" + 16 random hex digits per process + "-" + a counter. A uuid4 per click cost
    ~8 µs here (a quarter of a click's scoring); this costs well under 1 µs and is as unique in practice."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()
        os.register_at_fork(after_in_child=self.reset)  # forked workers must not share a prefix

    def reset(self) -> None:
        self.prefix, self.next = f"{MADE_ID_PREFIX}{os.urandom(8).hex()}-", 0
        self.lock = threading.Lock()

    def take(self, n: int) -> list[str]:
        with self.lock:
            start, self.next = self.next, self.next + n
        prefix = self.prefix
        return [f"{prefix}{i}" for i in range(start, start + n)]


_MADE = _MadeIds()


def made_click_ids(n: int) -> list[str]:
    return _MADE.take(n)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A local folder or gs://bucket/prefix, through pyarrow's own filesystems."""
    from attribution import storage

    if storage.is_remote(uri):
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.realpath(os.fspath(uri))  # the local branch: a plain path


@dataclass
class _Pending:
    ids: np.ndarray
    t: np.ndarray
    click_ids: list[str]
    p: np.ndarray
    served_at: float


class PredictionLog:
    """The writer; thread-safe `on_scored`; `close` is idempotent."""

    def __init__(
        self, uri: str, model: str, max_queue: int = 4096, roll_rows: int = 500_000, roll_seconds: float = 300.0,
    ) -> None:
        if max_queue < 1 or roll_rows < 1 or roll_seconds <= 0:
            raise ValueError("max_queue, roll_rows and roll_seconds must be positive")
        self.uri, self.model = uri, model
        self.fs, self.root = filesystem(uri)
        self.fs.create_dir(self.root, recursive=True)
        self.roll_rows, self.roll_seconds = roll_rows, roll_seconds
        self._queue: queue.Queue[_Pending | None] = queue.Queue(max_queue)
        self._count_lock = threading.Lock()
        self.dropped_clicks = self.dropped_batches = self.logged_clicks = self.files_written = 0
        self._last_warning = 0.0
        self._closed = False
        self._close_lock = threading.Lock()
        self._sequence = 0
        self._writer = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._writer.start()
        log.info("prediction log -> %s (model %s, roll at %d rows or %.0fs)", uri, model, roll_rows, roll_seconds)

    # ---- the request path: no I/O, no waiting --------------------------------------------------------
    def on_scored(self, batch: Any, p: np.ndarray) -> None:
        """An InferenceCore hook: fills made click_ids into `batch.click_ids` and sets `batch.made_ids` (so
        the client gets them back) and queues the rows. Never blocks; a full queue is counted."""
        ids = batch.click_ids
        if ids is None:
            ids = batch.click_ids = made_click_ids(len(batch))
            batch.made_ids = True
        elif None in ids:
            made = iter(made_click_ids(ids.count(None)))
            ids = batch.click_ids = [v if v is not None else next(made) for v in ids]
            batch.made_ids = True
        if self._closed:
            self._dropped(len(batch), "the log is closed")
            return
        try:
            self._queue.put_nowait(_Pending(batch.ids, batch.t, ids, p, time.time()))
        except queue.Full:
            self._dropped(len(batch), "the queue is full")

    def _dropped(self, n: int, why: str) -> None:
        with self._count_lock:
            self.dropped_clicks += n
            self.dropped_batches += 1
            now = time.monotonic()
            if now - self._last_warning < 10.0:
                return
            self._last_warning = now
            total = self.dropped_clicks
        log.warning("prediction log: %s, %d clicks not logged so far (%s)", why, total, self.uri)

    # ---- the writer thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        pending: list[_Pending] = []
        rows, started = 0, time.monotonic()
        while True:
            wait = max(0.05, self.roll_seconds - (time.monotonic() - started)) if pending else None
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = ...  # the file's time is up
            if item is None:  # close(): write what is held, then stop
                self._write(pending)
                return
            if item is not ...:
                if not pending:
                    started = time.monotonic()
                pending.append(item)
                rows += len(item.t)
            if pending and (rows >= self.roll_rows or time.monotonic() - started >= self.roll_seconds):
                self._write(pending)
                pending, rows = [], 0

    def _write(self, pending: Sequence[_Pending]) -> None:
        if not pending:
            return
        try:
            table = rows_table(pending, self.model)
            self._sequence += 1
            name = f"predictions-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{uuid.uuid4().hex[:8]}-{self._sequence:06d}.parquet"
            final = f"{self.root}/{name}"
            if isinstance(self.fs, pafs.LocalFileSystem):  # readers skip "_" names: rename when complete
                tmp = f"{self.root}/_{name}"
                pq.write_table(table, tmp, filesystem=self.fs, **WRITE_OPTIONS)
                self.fs.move(tmp, final)
            else:  # an object store publishes an object whole, on close
                pq.write_table(table, final, filesystem=self.fs, **WRITE_OPTIONS)
            with self._count_lock:
                self.logged_clicks += table.num_rows
                self.files_written += 1
        except Exception:  # the log must never take the predictor down
            n = sum(len(x.t) for x in pending)
            log.exception("prediction log: could not write %d rows to %s", n, self.uri)
            with self._count_lock:
                self.dropped_clicks += n

    def close(self, timeout: float = 60.0) -> None:
        """Write everything queued and stop the writer (idempotent)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._writer.join(timeout)
        log.info("prediction log closed: %d clicks in %d files, %d dropped", self.logged_clicks, self.files_written,
                 self.dropped_clicks)

    def stats(self) -> dict[str, int]:
        with self._count_lock:
            return {"logged_clicks": self.logged_clicks, "dropped_clicks": self.dropped_clicks,
                    "dropped_batches": self.dropped_batches, "files_written": self.files_written,
                    "queued_batches": self._queue.qsize()}


def rows_table(pending: Sequence[_Pending], model: str) -> pa.Table:
    ids = np.concatenate([x.ids for x in pending])
    n = len(ids)
    columns: dict[str, Any] = {CLICK_ID: pa.array([c for x in pending for c in x.click_ids], pa.string())}
    for j, f in enumerate(ID_FIELDS):
        columns[f] = pa.array(ids[:, j], pa.int64())
    columns[CLICK_TIME] = pa.array(np.concatenate([x.t for x in pending]), pa.int64())
    columns[PROBABILITY] = pa.array(np.concatenate([x.p for x in pending]), pa.float64())
    columns[MODEL_ID] = pa.repeat(pa.scalar(model, pa.string()), n)
    columns[SERVED_AT] = pa.array(np.concatenate([np.full(len(x.t), x.served_at) for x in pending]), pa.float64())
    return pa.table(columns, schema=SCHEMA)


def read_predictions(uri: str, since_served: float | None = None) -> pa.Table:
    """Every complete file of a prediction log (local folder or gs://), optionally only rows served since a time."""
    fs, root = filesystem(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no prediction log at {uri}")
    dataset = ds.dataset(root, format="parquet", filesystem=fs, schema=SCHEMA,
                         exclude_invalid_files=False, ignore_prefixes=["_", "."])
    flt = ds.field(SERVED_AT) >= since_served if since_served is not None else None
    return dataset.to_table(filter=flt)


def register_log_metrics(plog: PredictionLog, registry: Any) -> None:
    """The log's counters for the predictor's /metrics (dropped clicks are the overflow alarm)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector

    class _Collector(Collector):
        def describe(self) -> list:
            return []

        def collect(self):
            s = plog.stats()
            yield CounterMetricFamily("attribution_prediction_log_clicks", "Predictions written to the log",
                                      value=s["logged_clicks"])
            yield CounterMetricFamily("attribution_prediction_log_dropped_clicks",
                                      "Predictions not logged (queue full or write failed)", value=s["dropped_clicks"])
            yield GaugeMetricFamily("attribution_prediction_log_queued_batches", "Batches waiting for the writer",
                                    value=s["queued_batches"])

    registry.register(_Collector())


def attach_prediction_log(core: Any, uri: str, registry: Any = None) -> PredictionLog:
    """Log every prediction of an InferenceCore (both adapters call this); closed at exit if not before."""
    import atexit

    plog = PredictionLog(uri, model_id(core.model_dir))
    core.on_scored = plog.on_scored
    if registry is not None:
        register_log_metrics(plog, registry)
    atexit.register(plog.close)
    return plog
