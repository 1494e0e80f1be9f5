"""File in, features Parquet out: reading, validation, the engine, and writing, with progress and timings."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from attribution.data import ClickReader, OnBadRows
from attribution.features import DEFAULT_ENGINE, compute_features

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    rows: int
    bad_rows: int
    engine: str
    seconds: float
    output: str

    def __str__(self) -> str:
        rate = self.rows / self.seconds if self.seconds else float("nan")
        bad = f", {self.bad_rows} bad rows quarantined" if self.bad_rows else ""
        return f"{self.rows} rows of features ({self.engine}) -> {self.output} in {self.seconds:.1f}s ({rate:,.0f} rows/s){bad}"


def read_with_progress(path: str | Path, on_bad_rows: OnBadRows = "error", progress: bool = True) -> tuple[pd.DataFrame, int]:
    reader = ClickReader(path, on_bad_rows=on_bad_rows)
    frames = []
    with tqdm(desc=f"read {Path(path).name}", unit=" rows", unit_scale=True, disable=not progress) as bar:
        for frame in reader:
            frames.append(frame)
            bar.update(len(frame))
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return df, reader.bad_rows


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
    clicks, bad = read_with_progress(input_path, on_bad_rows, progress)
    log.info("read %d clicks from %s in %.1fs; computing features with %s", len(clicks), input_path, time.perf_counter() - t0, engine)
    feats = compute_features(clicks, engine=engine)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    feats.to_parquet(output_path, index=False)
    return BuildSummary(len(feats), bad, engine, time.perf_counter() - t0, str(output_path))
