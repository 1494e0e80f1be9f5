"""Warm start: rebuild the online state from the click log before the predictor reports ready.

The log's clicks of the last `retention` seconds (the largest window plus the lateness the state keeps)
before its newest click are replayed through the store in time order, in batches, logging progress. With
Redis, one replica warms (it holds the lock key `{P}warm-lock`) and the others wait for it; a Redis that
already holds state (its watermark is set: AOF kept it) is not warmed again.

Sources (`--warm-from`):
- a CSV/CSV.gz/Parquet click log (attribution.io.ClickReader): a local path, or a gs:// (any fsspec) URI read
  through attribution.storage, downloaded once to a temporary file;
- a BigQuery table in the click table's schema (attribution.features.bigquery.CLICK_TABLE_SCHEMA, click_time
  TIMESTAMP), `bq://PROJECT.DATASET.TABLE`: one query selects only the window's rows (click_time within
  `retention` of the table's newest click), in time order, read through google-cloud-bigquery with the
  ambient credentials (Workload Identity), or on an emulator when BIGQUERY_EMULATOR_HOST is set.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

import numpy as np
import pandas as pd

from attribution.features.online.clock import ReferenceClock
from attribution.features.online.state import MemoryStore, StateStore

log = logging.getLogger(__name__)
BQ_SCHEME = "bq://"
_BQ_NAME = re.compile(r"[A-Za-z0-9_-]+")
LOCK_SECONDS = 600  # a warming replica that died leaves the lock for at most this long


def recent_clicks(source: str, retention: int) -> pd.DataFrame:
    """The log's clicks within `retention` seconds of its newest click, in time order (log order for ties)."""
    if source.startswith(BQ_SCHEME):
        return _recent_bigquery(source[len(BQ_SCHEME):], retention)
    from attribution import storage

    with storage.local_file_for_read(source) as local:  # a local path in place; gs:// downloaded once
        return _recent_file(local, retention)


def _recent_file(path: str, retention: int) -> pd.DataFrame:
    from attribution.io import ClickReader

    keep: list[pd.DataFrame] = []
    newest = None
    for frame in ClickReader(path):
        t = frame["click_time"].to_numpy()
        if len(t):
            newest = int(t.max()) if newest is None else max(newest, int(t.max()))
            keep = [f[f["click_time"] >= newest - retention] for f in keep]  # memory follows the window
            keep.append(frame[frame["click_time"] >= newest - retention])
    if not keep:
        return pd.DataFrame(columns=["row_id", "ip", "app", "device", "os", "channel", "click_time"])
    recent = pd.concat(keep, ignore_index=True)
    recent = recent[recent["click_time"] >= newest - retention]
    return recent.sort_values(["click_time", "row_id"], kind="stable").reset_index(drop=True)


def _recent_bigquery(table: str, retention: int) -> pd.DataFrame:
    """The window's clicks of a BigQuery click table `PROJECT.DATASET.TABLE`, by one query."""
    from google.cloud import bigquery

    from attribution.features.bigquery import DEFAULT_MAXIMUM_BYTES_BILLED, bigquery_client

    parts = table.split(".")
    if len(parts) != 3 or not all(_BQ_NAME.fullmatch(p) for p in parts):
        raise ValueError(f"--warm-from {BQ_SCHEME}{table}: expected {BQ_SCHEME}PROJECT.DATASET.TABLE")
    # Names checked above (no quoting tricks); `retention` is this code's own integer.
    sql = (f"SELECT row_id, ip, app, device, os, channel, UNIX_SECONDS(click_time) AS click_time FROM `{table}` "
           f"WHERE click_time >= TIMESTAMP_SUB((SELECT MAX(click_time) FROM `{table}`), INTERVAL {int(retention)} SECOND) "
           f"ORDER BY click_time, row_id")
    log.info("warm start: reading the last %d s of clicks from BigQuery table %s", retention, table)
    job = bigquery_client(parts[0]).query(sql, job_config=bigquery.QueryJobConfig(
        maximum_bytes_billed=DEFAULT_MAXIMUM_BYTES_BILLED, labels={"app": "attribution", "step": "warm-start"}))
    frame = job.result().to_arrow(create_bqstorage_client=False).to_pandas()
    return frame.astype({c: np.int64 for c in frame.columns}).reset_index(drop=True)


def replay(store: StateStore, clicks: pd.DataFrame, clock: ReferenceClock | None = None, batch: int = 10_000) -> None:
    ids = clicks[["ip", "app", "device", "os", "channel"]].to_numpy(np.int64)
    t = clicks["click_time"].to_numpy(np.int64)
    cids = clicks["click_id"].astype(str).tolist() if "click_id" in clicks else None
    t0 = time.monotonic()
    for i in range(0, len(t), batch):
        store.score_arrays(ids[i : i + batch], t[i : i + batch], None if cids is None else cids[i : i + batch])
        if clock is not None:
            clock.observe(t[i : i + batch])
        log.info("warm start: %d of %d clicks replayed (%.1fs)", min(i + batch, len(t)), len(t), time.monotonic() - t0)


def warm_start(store: StateStore, source: str, clock: ReferenceClock | None = None, wait_s: float = 1800.0) -> None:
    """Rebuild `store` from the click log at `source` (see the module docstring)."""
    from attribution.features.online.redis import RedisStore

    if isinstance(store, MemoryStore) or not isinstance(store, RedisStore):
        replay(store, recent_clicks(source, store.retention), clock)
        return
    lock, me = store.prefix + "warm-lock", uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    while True:
        if store._call(store.client.set, lock, me, nx=True, ex=LOCK_SECONDS):
            try:
                if store.watermark is None:
                    log.info("warm start: Redis holds no state; this replica warms it from %s", source)
                    replay(store, recent_clicks(source, store.retention))
                else:
                    log.info("warm start: Redis already holds state (watermark %d); nothing to warm", store.watermark)
            finally:
                if store.client.get(lock) == me.encode():
                    store.client.delete(lock)
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"warm start: another replica held {lock} for over {wait_s:.0f}s")
        log.info("warm start: another replica is warming the Redis state; waiting")
        time.sleep(1.0)
    if clock is not None and clock.kind == "stream":  # the stream clock learns the recent stream too
        clock.observe(recent_clicks(source, store.late_by)["click_time"].to_numpy(np.int64))
