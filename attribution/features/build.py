"""File in, features Parquet out: reading, validation, the engine, and writing, with progress and timings."""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left, bisect_right
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from attribution.features.compute import DEFAULT_ENGINE, compute_features
from attribution.features.spec import DEFAULT_SPEC, FeatureSpec
from attribution.features.summary import BuildSummary
from attribution.io import ROW_GROUP_ROWS, ClickReader, OnBadRows, ParquetSink, read_clicks

log = logging.getLogger(__name__)


def read_with_progress(path: str | Path, on_bad_rows: OnBadRows = "error", progress: bool = True) -> tuple[pd.DataFrame, int]:
    reader = ClickReader(path, on_bad_rows=on_bad_rows)
    frames = []
    with tqdm(desc=f"read {Path(path).name}", unit=" rows", unit_scale=True, disable=not progress) as bar:
        for frame in reader:
            frames.append(frame)
            bar.update(len(frame))
    return _concat(frames), reader.bad_rows


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def build_features_file(
    input_path: str | Path,
    output_path: str | Path,
    engine: str = DEFAULT_ENGINE,
    on_bad_rows: OnBadRows = "error",
    memory_limit: str | None = None,
    progress: bool = True,
) -> BuildSummary:
    if memory_limit:
        from attribution.features.out_of_core import build_out_of_core

        return build_out_of_core(input_path, output_path, memory_limit=memory_limit, on_bad_rows=on_bad_rows, progress=progress)
    t0 = time.perf_counter()
    warm_up = _warm_up_in_background(engine)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    sink = ParquetSink(Path(output_path))
    try:
        if engine == "vectorized":
            frames, bad, streamed = _stream_in_time_chunks(input_path, on_bad_rows, progress, warm_up, sink)
            clicks = None if streamed else _concat(frames)
            if not streamed and sink.rows:  # chunks written before a click out of order: start the file again
                sink.close()
                sink = ParquetSink(Path(output_path))
        else:
            clicks, bad = read_with_progress(input_path, on_bad_rows, progress)
        if clicks is not None:  # one shot: another engine, or input not in time order
            log.info("read %d clicks from %s in %.1fs; computing features with %s", len(clicks), input_path,
                     time.perf_counter() - t0, engine)
            if warm_up is not None:
                warm_up.join()
            sink.write(compute_features(clicks, engine=engine))
    finally:
        sink.close()
    return BuildSummary(sink.rows, bad, engine, time.perf_counter() - t0, str(output_path))


MIN_CHUNK_ROWS = ROW_GROUP_ROWS
# Batches of a quarter row group: the first chunk starts computing soon after its last second is read.
STREAM_BATCH_ROWS = ROW_GROUP_ROWS // 4


def _stream_in_time_chunks(
    input_path: str | Path, on_bad_rows: OnBadRows, progress: bool, warm_up: threading.Thread | None,
    sink: ParquetSink, spec: FeatureSpec = DEFAULT_SPEC,
) -> tuple[list[pd.DataFrame], int, bool]:
    """Time-ordered clicks (as click logs are) in time chunks, each computed with the window of history
    before it on a worker thread as soon as its last second has been read: the kernel overlaps the reading,
    and the sink encodes one chunk while the kernel computes the next, where one shot would leave a core
    idle during each. Chunks are written as they are done, in order; a click out of order stops the
    chunking, and the caller computes the frames read in one shot (into a new file, if chunks were written).
    Returns (frames read, bad rows, whether the features were written). A chunk holds at least four times
    the history it recomputes (at most 25% more kernel work) and at least a row group."""
    from attribution.features.out_of_core import chunk_features

    reader = ClickReader(input_path, batch_rows=STREAM_BATCH_ROWS, on_bad_rows=on_bad_rows)
    frames: list[pd.DataFrame] = []
    starts = [0]  # first row of each frame, then the row count
    buffer = np.empty(0, np.int64)
    t = buffer[:0]  # every click_time read
    next_row, ordered = 0, True  # first row of the next chunk; in time order so far
    chunks: list[Future[pd.DataFrame]] = []
    written = 0  # chunks handed to the sink

    def compute(parts: tuple[pd.DataFrame, ...], lo: int, hi: int, c0: int) -> pd.DataFrame:
        if warm_up is not None:
            warm_up.join()
        return chunk_features(_concat(list(parts)).iloc[lo:hi], c0, spec)

    def submit(c1: int) -> None:
        nonlocal next_row
        c0 = int(t[next_row])
        lo, hi = (int(i) for i in np.searchsorted(t, [c0 - spec.max_window, c1], side="left"))
        first, last = bisect_right(starts, lo) - 1, bisect_left(starts, hi)  # the frames holding rows [lo, hi)
        chunks.append(pool.submit(compute, tuple(frames[first:last]), lo - starts[first], hi - starts[first], c0))
        next_row = hi

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="features-chunk") as pool, \
            tqdm(desc=f"read {Path(input_path).name}", unit=" rows", unit_scale=True, disable=not progress) as bar:
        for frame in reader:
            ft = frame["click_time"].to_numpy()
            ordered = ordered and bool(np.all(ft[1:] >= ft[:-1])) and (not len(ft) or not len(t) or ft[0] >= t[-1])
            frames.append(frame)
            starts.append(starts[-1] + len(frame))
            if starts[-1] > len(buffer):  # doubled: appending stays linear in the rows read
                buffer = np.concatenate([t, np.empty(max(starts[-1], 2 * len(buffer)) - len(t), np.int64)])
            buffer[len(t):starts[-1]] = ft
            t = buffer[:starts[-1]]
            bar.update(len(frame))
            while ordered and (c1 := _complete_cut(t, next_row, spec)) is not None:
                submit(c1)
            while ordered and written < len(chunks) and chunks[written].done():
                sink.write(chunks[written].result())  # the writer starts while the input is still read
                written += 1
        if not (ordered and len(t)):
            for chunk in chunks:
                chunk.cancel()
            return frames, reader.bad_rows, False
        log.info("read %d clicks in time order from %s; %d chunks", len(t), input_path, len(chunks) + (next_row < len(t)))
        if next_row < len(t):
            submit(int(t[-1]) + 1)
        for chunk in chunks[written:]:
            sink.write(chunk.result())
    return frames, reader.bad_rows, True


def _complete_cut(t: np.ndarray, next_row: int, spec: FeatureSpec) -> int | None:
    """The second that ends the chunk starting at row next_row, once every click before it has been read
    (time-ordered input: rows still to come are at or after t[-1]); None while more rows are needed."""
    history_rows = len(t) * spec.max_window // max(1, int(t[-1]) - int(t[0]) + 1)
    own_rows = max(MIN_CHUNK_ROWS, 4 * history_rows)
    if len(t) - next_row <= own_rows:
        return None
    cut = int(t[next_row + own_rows])
    if cut == t[next_row]:  # one second holds more than a chunk: the chunk takes all of it
        after = int(np.searchsorted(t, cut, side="right"))
        cut = int(t[after]) if after < len(t) else cut
    return cut if t[next_row] < cut <= t[-1] else None


def _warm_up_in_background(engine: str) -> threading.Thread | None:
    """The vectorized engine's first call loads numba's compiler registries and the cached kernels
    (0.5-0.8 s of CPU with numba's import): done on a thread, the import too, while the input is read and
    validated, which spends its time in Arrow's decoder and numpy with the GIL released."""
    if engine != "vectorized":
        return None
    thread = threading.Thread(target=_warm_up, name="numba-warm-up", daemon=True)
    thread.start()
    return thread


def _warm_up() -> None:
    from attribution.features.engines import vectorized

    vectorized.warm_up()


def load_training_frame(input_path: str | Path, engine: str = DEFAULT_ENGINE, spec: FeatureSpec = DEFAULT_SPEC) -> pd.DataFrame:
    """A features Parquet as is, or a click file with features computed over the whole stream first
    (so holdout rows get the history before them)."""
    p = Path(input_path)
    if p.suffix == ".parquet" or p.is_dir():
        import pyarrow.parquet as pq

        names = pq.read_schema(p if p.is_file() else next(p.glob("*.parquet"))).names
        if set(spec.feature_names) <= set(names):
            return pd.read_parquet(p)
    return compute_features(read_clicks(p), engine, spec)


# Peak bytes per input row of the in-memory build (the click frame, the kernel's per-group orders and
# sweep buffers, ~40 output columns and the writer's Arrow copy): 13.5 GB measured at 10M rows.
BUILD_BYTES_PER_ROW = 1_500
# Peak bytes per row of a features file loaded whole (Cat2Vec, tuning, in-memory training, evaluation):
# 6.4-6.6 GB measured at 10M rows, with a margin for the matrices made of it.
LOAD_BYTES_PER_ROW = 1_000
# Input bytes per click when a file's row count is not in its metadata: a Kaggle CSV row is ~40 bytes
# (train.csv: 7.5 GB / 184.9M), gzip keeps ~11 of them; the smaller figures over-count rows, erring on
# the out-of-core side.
CSV_BYTES_PER_ROW, GZIP_BYTES_PER_ROW = 36, 8


def estimated_rows(path: str | Path) -> int:
    """Rows of a click or features file: exact for Parquet (its footers), estimated from the size else."""
    p = Path(path)
    if p.suffix == ".parquet" or p.is_dir():
        import pyarrow.dataset as ds

        return ds.dataset(p, format="parquet").count_rows()
    return p.stat().st_size // (GZIP_BYTES_PER_ROW if p.name.lower().endswith(".gz") else CSV_BYTES_PER_ROW)


LARGE_ROWS = 5_000_000  # above this, a features Parquet is streamed rather than loaded whole


def fits_in_memory(path: str | Path, memory_budget: int, bytes_per_row: int = LOAD_BYTES_PER_ROW) -> bool:
    """Whether a pipeline step holds every row of `path` at once: only when that fits memory_budget at
    bytes_per_row and the file has at most LARGE_ROWS rows. Above that the out-of-core and streamed paths
    are the faster ones too (10M clicks: the whole-file build 240 s, the out-of-core one 27 s), and every
    larger size takes the same path, so times measured at two sizes project to a third."""
    rows = estimated_rows(path)
    return rows <= LARGE_ROWS and rows * bytes_per_row <= memory_budget


def is_large_features_file(path: str | Path, spec: FeatureSpec = DEFAULT_SPEC) -> bool:
    p = Path(path)
    if not (p.suffix == ".parquet" or p.is_dir()):
        return False
    import pyarrow.dataset as ds

    data = ds.dataset(p, format="parquet")
    return set(spec.feature_names) <= set(data.schema.names) and data.count_rows() > LARGE_ROWS
