"""Features for files larger than memory: time chunks with the history carried across them.

1. ingest: the click file is streamed through validation into a compact Parquet (one batch in memory);
2. order: DuckDB sorts it by (click_time, row_id) under a memory limit, spilling to disk (skipped when the
   input is already in time order, as Kaggle's train.csv is);
3. features: the vectorized kernel runs on time chunks [c0, c1) read together with the window of history
   before them, [c0 - max_window, c0); the history rows only feed the windows, features are computed and
   written for the chunk's own rows. Every feature looks back at most max_window seconds, so each chunk's
   rows get exactly the one-shot result (tested).
Peak memory is bounded by the rows read per chunk (own + history), which follow from --memory-limit.
"""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
from tqdm.auto import tqdm

from attribution.features.compute import conform_output
from attribution.features.engines import vectorized
from attribution.features.spec import DEFAULT_SPEC, FeatureSpec
from attribution.features.summary import BuildSummary
from attribution.io import ClickReader, OnBadRows, ParquetSink

log = logging.getLogger(__name__)
# Peak bytes per row read into one chunk (own rows and history together): the input frame, per-group orders,
# codes and sweep buffers, ~32 output columns and their Arrow copy for the writer, with a margin.
BYTES_PER_ROW = 640


def parse_memory(limit: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", limit, re.IGNORECASE)
    if not m:
        raise ValueError(f"memory limit {limit!r}: use a size such as 16GB, 512MB")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def chunk_rows_for(memory_limit: str) -> int:
    return max(10_000, parse_memory(memory_limit) // BYTES_PER_ROW)


def ingest(input_path: str | Path, staged: Path, on_bad_rows: OnBadRows, progress: bool) -> tuple[int, int, bool]:
    """Validated compact Parquet; returns (rows, bad rows, already in time order)."""
    reader = ClickReader(input_path, on_bad_rows=on_bad_rows)
    sink = ParquetSink(staged)
    ordered, last = True, None
    with tqdm(desc="ingest", unit=" rows", unit_scale=True, disable=not progress) as bar:
        for frame in reader:
            t = frame["click_time"].to_numpy()
            if len(t):
                ordered &= bool(np.all(t[1:] >= t[:-1])) and (last is None or t[0] >= last)
                last = int(t[-1])
            sink.write(frame)
            bar.update(len(frame))
    sink.close()
    return sink.rows, reader.bad_rows, ordered


DUCKDB_MIN_MEMORY = 128 * 1024**2  # DuckDB's external sort needs a few buffers per thread to make progress


def sort_by_time(staged: Path, out: Path, memory_limit: str, temp_dir: Path) -> None:
    from attribution.features.engines.duckdb import connect

    budget = max(parse_memory(memory_limit), DUCKDB_MIN_MEMORY)
    con = connect(memory_limit=f"{budget // 1024**2}MB", temp_directory=str(temp_dir))
    try:
        con.execute("SET preserve_insertion_order = true")
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{staged}') ORDER BY click_time, row_id) "
            f"TO '{out}' (FORMAT parquet, ROW_GROUP_SIZE 262144)"
        )
    finally:
        con.close()


def time_chunks(t_sorted: pa.ChunkedArray | np.ndarray, window_rows: int, history: int = 0) -> list[tuple[int, int]]:
    """[c0, c1) second ranges cut at whole seconds, each read with `history` seconds before it: a chunk's
    own rows plus its history rows stay within window_rows where the data allows (a chunk always gets at
    least a quarter of window_rows of its own, so progress never stalls behind a dense history)."""
    t = np.asarray(t_sorted)
    if not len(t):
        return []
    bounds = [int(t[0])]
    start = 0  # index of the chunk's first own row
    while True:
        first_history = int(np.searchsorted(t, t[start] - history, side="left"))
        end = max(first_history + window_rows, start + max(1, window_rows // 4))
        if end >= len(t):
            break
        cut = int(t[end])
        if cut <= bounds[-1]:  # one second holds more than the budget: the chunk takes all of it
            after = int(np.searchsorted(t, bounds[-1], side="right"))
            if after >= len(t):
                break
            cut = int(t[after])
        bounds.append(cut)
        start = int(np.searchsorted(t, cut, side="left"))
    bounds.append(int(t[-1]) + 1)
    return list(itertools.pairwise(bounds))


def chunk_features(window: pd.DataFrame, c0: int, spec: FeatureSpec = DEFAULT_SPEC) -> pd.DataFrame:
    """Features of a time-ordered window's rows at or after second c0; the earlier rows only feed the windows."""
    own = window.iloc[int(np.searchsorted(window["click_time"].to_numpy(), c0, side="left")):]
    return conform_output(vectorized.compute(window, spec, query_from=c0), own.reset_index(drop=True), spec)


def features_by_chunks(
    ordered: Path, output: Path, window_rows: int, spec: FeatureSpec = DEFAULT_SPEC, progress: bool = True
) -> int:
    dataset = ds.dataset(ordered, format="parquet")
    times = dataset.to_table(columns=["click_time"]).column("click_time").to_numpy()
    chunks = time_chunks(times, window_rows, spec.max_window)
    del times
    sink = ParquetSink(output)
    with tqdm(total=dataset.count_rows(), desc="features", unit=" rows", unit_scale=True, disable=not progress) as bar:
        for c0, c1 in chunks:
            window = dataset.to_table(
                filter=(ds.field("click_time") >= c0 - spec.max_window) & (ds.field("click_time") < c1)
            ).to_pandas()
            feats = chunk_features(window, c0, spec)
            del window
            sink.write(feats)
            bar.update(len(feats))
    sink.close()
    return sink.rows


def build_out_of_core(
    input_path: str | Path,
    output_path: str | Path,
    memory_limit: str = "16GB",
    on_bad_rows: OnBadRows = "error",
    progress: bool = True,
    chunk_rows: int | None = None,
    work_dir: str | Path | None = None,
) -> BuildSummary:
    """Features Parquet (rows in time order, each with its row_id) under a memory budget."""
    t0 = time.perf_counter()
    output = Path(output_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="attribution-ooc-", dir=work_dir or output.parent))
    try:
        staged = work / "staged.parquet"
        rows, bad, ordered = ingest(input_path, staged, on_bad_rows, progress)
        log.info("ingest: %d rows (%d bad) in %.1fs; input %s in time order", rows, bad,
                 time.perf_counter() - t0, "already" if ordered else "not")
        if not ordered:
            t1 = time.perf_counter()
            sorted_path = work / "ordered.parquet"
            sort_by_time(staged, sorted_path, memory_limit, work / "spill")
            staged.unlink()
            staged = sorted_path
            log.info("order: sorted by time under %s in %.1fs", memory_limit, time.perf_counter() - t1)
        t2 = time.perf_counter()
        n = features_by_chunks(staged, output, chunk_rows or chunk_rows_for(memory_limit), progress=progress)
        log.info("features: %d rows in %.1fs", n, time.perf_counter() - t2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuildSummary(n, bad, "vectorized (out of core)", time.perf_counter() - t0, str(output))
