"""The out-of-core path (time chunks + carried history, DuckDB sort under a memory limit) gives exactly the
in-memory features."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from attribution.features.compute import compute_features
from attribution.features.out_of_core import build_out_of_core, chunk_rows_for, parse_memory, time_chunks
from attribution.io import write_clicks
from tests.conftest import tricky_stream


def in_memory(clicks: pd.DataFrame) -> pd.DataFrame:
    return compute_features(clicks, "vectorized")


@pytest.mark.parametrize("limit", ["4MB", "16MB"])
def test_tiny_memory_limit_matches_in_memory(tmp_path, sample_clicks, limit):
    """The real sample is not in time order, so this also exercises the spilling DuckDB sort."""
    src = write_clicks(sample_clicks, tmp_path / "clicks.csv")
    summary = build_out_of_core(src, tmp_path / "f.parquet", memory_limit=limit, progress=False)
    assert chunk_rows_for(limit) < len(sample_clicks) / 3, "the budget forces several chunks"
    got = pd.read_parquet(tmp_path / "f.parquet").sort_values("row_id").reset_index(drop=True)
    want = in_memory(sample_clicks.drop(columns="row_id"))
    assert summary.rows == len(want) == 100_000
    pd.testing.assert_frame_equal(got[want.columns], want, check_exact=True, check_dtype=False)


def test_chunks_with_same_second_bursts_and_duplicates(tmp_path):
    clicks = tricky_stream(4000, seed=9)
    src = write_clicks(clicks, tmp_path / "t.parquet")
    build_out_of_core(src, tmp_path / "f.parquet", memory_limit="1MB", chunk_rows=300, progress=False)
    got = pd.read_parquet(tmp_path / "f.parquet").sort_values("row_id").reset_index(drop=True)
    want = in_memory(clicks.drop(columns="row_id"))
    pd.testing.assert_frame_equal(got[want.columns], want, check_exact=True, check_dtype=False)


def test_time_chunks_cut_at_whole_seconds():
    t = [0, 0, 0, 1, 1, 2, 5, 5, 5, 5, 9]
    chunks = time_chunks(t, 2)
    assert len(chunks) > 2
    assert chunks[0][0] == 0 and chunks[-1][1] == 10
    assert all(a < b for a, b in chunks) and all(chunks[i][1] == chunks[i + 1][0] for i in range(len(chunks) - 1))


def test_time_chunks_keep_own_plus_history_rows_within_budget():
    rng = np.random.default_rng(3)
    t = np.sort(rng.integers(0, 20_000, 50_000))
    budget, history = 6_000, 900
    chunks = time_chunks(t, budget, history)
    assert chunks[0][0] == t[0] and chunks[-1][1] == t[-1] + 1
    assert all(chunks[i][1] == chunks[i + 1][0] for i in range(len(chunks) - 1))
    for c0, c1 in chunks:
        read = int(np.searchsorted(t, c1) - np.searchsorted(t, c0 - history))
        own = int(np.searchsorted(t, c1) - np.searchsorted(t, c0))
        assert read <= budget and own > 0
    assert len(chunks) > 50_000 // budget


def test_memory_limit_parsing():
    assert parse_memory("16GB") == 16 * 1024**3 and parse_memory("512MB") == 512 * 1024**2
    with pytest.raises(ValueError, match="memory limit"):
        parse_memory("lots")


@pytest.mark.parametrize("ordered", ["yes", "no", "late"])
def test_the_in_memory_command_in_time_chunks_equals_one_shot(tmp_path, monkeypatch, ordered):
    """`attribution features` computes time-ordered input in chunks (each with its history) while it reads,
    so the kernel overlaps the reader and the writer; input out of order in one shot, also when the first
    click out of order comes after chunks were computed ("late"). All give the one-shot features, rows in
    input order."""
    from attribution.features import build

    clicks = tricky_stream(6000, seed=4)
    t = clicks["click_time"]
    clicks["click_time"] = t.min() + (t - t.min()) * 8  # ~3.7 days: several chunks of 4x the 8 h history
    if ordered != "no":
        clicks = clicks.sort_values(["click_time", "row_id"], kind="stable").reset_index(drop=True)
    if ordered == "late":  # the last click moved before the one ahead of it, read slowly: chunks are
        # written before it is read, and the file is started again
        clicks.loc[len(clicks) - 1, "click_time"] = clicks["click_time"].iloc[-2] - 1
        validate = build.ClickReader.__iter__.__globals__["validate_batch"]
        monkeypatch.setattr("attribution.io.validate_batch", lambda batch: time.sleep(0.2) or validate(batch))
    src = write_clicks(clicks.drop(columns="row_id"), tmp_path / "c.parquet")
    chunked = []
    monkeypatch.setattr(build, "MIN_CHUNK_ROWS", 500)
    monkeypatch.setattr(build, "STREAM_BATCH_ROWS", 700)
    monkeypatch.setattr("attribution.features.out_of_core.chunk_features",
                        lambda window, c0, spec, real=build_out_of_core.__globals__["chunk_features"]:
                        chunked.append(c0) or real(window, c0, spec))
    summary = build.build_features_file(src, tmp_path / "f.parquet", progress=False)
    got = pd.read_parquet(tmp_path / "f.parquet")
    want = in_memory(clicks.drop(columns="row_id"))
    assert summary.rows == len(want)
    if ordered != "late":  # (late: chunks queued before the disorder was read are cancelled or discarded)
        assert (len(chunked) >= 3) == (ordered == "yes")
    pd.testing.assert_frame_equal(got[want.columns], want, check_exact=True, check_dtype=False)
