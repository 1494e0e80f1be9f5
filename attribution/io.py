"""Click readers and writers: CSV, CSV.gz and Parquet, streamed in batches so a 184.9M-row file never has
to sit in memory as Python objects. Every row is validated (attribution.schema); bad rows stop the read
with a message naming file, row and field, or are quarantined to a side file and counted."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from attribution.schema import CLICK_TIME, ID_FIELDS, ROW_ID, ClickSchemaError, check_columns, validate_batch

log = logging.getLogger(__name__)
OnBadRows = Literal["error", "quarantine"]
DEFAULT_BATCH_ROWS = 1_000_000
ROW_GROUP_ROWS = 1 << 20  # pyarrow's own default cap: readers scan ~1M-row batches


def _raw_batches(path: Path, batch_rows: int) -> Iterator[pa.RecordBatch]:
    name = path.name.lower()
    if name.endswith(".parquet") or path.is_dir():
        dataset = pq.ParquetFile(path) if path.is_file() else None
        if dataset is not None:
            yield from dataset.iter_batches(batch_size=batch_rows)
        else:
            for part in sorted(path.glob("*.parquet")):
                yield from pq.ParquetFile(part).iter_batches(batch_size=batch_rows)
        return
    import pyarrow.csv as pacsv  # only CSV input needs it

    # Strings first: validation decides what is an integer or a time, so one bad cell never aborts the
    # stream halfway with an unlocated parse error. Block size ~ batch_rows * ~50 bytes per CSV row.
    read = pacsv.ReadOptions(block_size=max(1 << 20, min(batch_rows * 50, 1 << 30)))
    header = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16)).schema.names
    convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in header}, strings_can_be_null=False)
    reader = pacsv.open_csv(path, read_options=read, convert_options=convert)
    yield from reader


class ClickReader:
    """Iterate validated click batches. `row_id` is each click's 0-based position in the input, so
    quarantined rows leave gaps rather than renumbering the rest."""

    def __init__(
        self,
        path: str | Path,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        on_bad_rows: OnBadRows = "error",
        quarantine_path: str | Path | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"click file not found: {self.path}")
        if on_bad_rows not in ("error", "quarantine"):
            raise ValueError(f"on_bad_rows must be 'error' or 'quarantine', not {on_bad_rows!r}")
        self.batch_rows = batch_rows
        self.on_bad_rows = on_bad_rows
        self.quarantine_path = Path(quarantine_path) if quarantine_path else self.path.with_name(
            self.path.name.split(".")[0] + ".bad_rows.csv"
        )
        self.rows_read = 0
        self.bad_rows = 0

    def __iter__(self) -> Iterator[pd.DataFrame]:
        self.rows_read = self.bad_rows = 0
        quarantine: list[pd.DataFrame] = []
        checked = False
        for batch in _raw_batches(self.path, self.batch_rows):
            if not checked:
                check_columns(batch.schema.names, str(self.path))
                checked = True
            frame, bad = validate_batch(batch)
            start = self.rows_read
            self.rows_read += batch.num_rows
            if len(bad.positions):
                if self.on_bad_rows == "error":
                    i = int(bad.positions[0])
                    value = batch.column(bad.fields[0])[i].as_py()
                    raise ClickSchemaError(str(self.path), start + i + 1, bad.fields[0], bad.reasons[0], value)
                rejected = batch.take(pa.array(bad.positions)).to_pandas()
                rejected.insert(0, "row", bad.positions + start + 1)
                rejected["field"] = bad.fields
                rejected["reason"] = bad.reasons
                quarantine.append(rejected)
                self.bad_rows += len(bad.positions)
            good = np.ones(batch.num_rows, dtype=bool)
            good[bad.positions] = False
            frame.insert(0, "row_id", np.flatnonzero(good).astype(np.int64) + start)
            yield frame
        if not checked:
            raise ClickSchemaError(str(self.path), None, "*", "file has no header or no batches")
        if quarantine:
            pd.concat(quarantine).to_csv(self.quarantine_path, index=False)
            log.warning("%s: quarantined %d bad rows to %s", self.path, self.bad_rows, self.quarantine_path)


def read_clicks(
    path: str | Path, on_bad_rows: OnBadRows = "error", quarantine_path: str | Path | None = None
) -> pd.DataFrame:
    """The whole file as one compact frame (for files that fit in memory)."""
    reader = ClickReader(path, on_bad_rows=on_bad_rows, quarantine_path=quarantine_path)
    frames = list(reader)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def to_kaggle_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Epoch seconds back to the Kaggle text format (for CSV output and BigQuery loads)."""
    out = df.drop(columns=["row_id"], errors="ignore").copy()
    for col in ("click_time", "attributed_time"):
        if col in out:
            out[col] = pd.to_datetime(out[col], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S")
    return out


class ParquetSink:
    """Appends frames to one Parquet file, opened with the first frame's schema, in row groups of at most
    row_group_rows. A frame's row groups are converted, encoded and written on a background thread (Arrow's
    encoder releases the GIL) while the caller goes on: write() waits only for the previous frame's row
    groups, so one frame is in flight while the caller computes the next, and the caller is never held up
    between one frame's row groups (waiting there kept the features kernel ~1 s per chunk off a core). Dictionary
    encoding only for the id columns (few distinct values; a float feature's dictionary is tried, found
    too big and dropped, which costs a pass); min/max statistics only for the columns readers filter on
    (click time, row id)."""

    def __init__(
        self, path: Path, row_group_rows: int = ROW_GROUP_ROWS,
        dictionary: tuple[str, ...] = ID_FIELDS, statistics: tuple[str, ...] = (CLICK_TIME, ROW_ID),
    ) -> None:
        self.path, self.writer, self.rows = path, None, 0
        self.row_group_rows, self.dictionary, self.statistics = row_group_rows, list(dictionary), list(statistics)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def write(self, frame: pd.DataFrame) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, pa.Schema.from_pandas(frame, preserve_index=False),
                                           use_dictionary=self.dictionary, write_statistics=self.statistics)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-sink")
        self._wait()
        # converted on the writer's thread too, one row group at a time: no Arrow copy of a whole frame
        self._pending = [self._pool.submit(self._write_rows, frame.iloc[start:start + self.row_group_rows])
                         for start in (range(0, len(frame), self.row_group_rows) if len(frame) else [0])]
        self.rows += len(frame)

    def _write_rows(self, rows: pd.DataFrame) -> None:
        self.writer.write_table(pa.Table.from_pandas(rows, preserve_index=False))

    def _wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()  # re-raises a failed write here

    def close(self) -> None:
        if self.writer is not None:
            try:
                self._wait()
            finally:
                self._pool.shutdown()
                self.writer.close()


def write_clicks(df: pd.DataFrame | Iterable[pd.DataFrame], path: str | Path) -> Path:
    """CSV (optionally .gz) in the Kaggle format, or Parquet with timestamp columns. Given an iterable of
    frames (time slices of a stream too big for memory), appends them one at a time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [df] if isinstance(df, pd.DataFrame) else df
    if path.name.endswith(".parquet"):
        sink = ParquetSink(path)
        try:
            for frame in frames:
                out = frame.drop(columns=["row_id"], errors="ignore").copy()
                for col in ("click_time", "attributed_time"):
                    if col in out:
                        out[col] = pd.to_datetime(out[col], unit="s")
                sink.write(out)
        finally:
            sink.close()
    else:
        with (gzip.open if path.name.endswith(".gz") else open)(path, "wt", newline="") as fh:
            for i, frame in enumerate(frames):
                to_kaggle_frame(frame).to_csv(fh, index=False, header=i == 0)
    return path
