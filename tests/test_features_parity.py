"""Every engine computes the spec identically, compared row by row on row_id."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attribution.features.compute import compute_features
from attribution.features.online.state import MemoryStore
from attribution.features.spec import DAY, DEFAULT_SPEC, FAMILIES, FeatureSpec, spec_with
from tests.conftest import tricky_stream

FAST_ENGINES = ("vectorized", "online", "online-counted")
# the seed and every family beyond it: key groups without ip, distinct ips, a 24 h horizon
WIDE_SPEC = spec_with(*FAMILIES)


def fast(clicks: pd.DataFrame, engine: str, spec: FeatureSpec = DEFAULT_SPEC) -> pd.DataFrame:
    """"online-counted": the online state with every distinct count kept up to date as its window moves
    (by default only windows of 64 clicks or more are, and the test streams are short)."""
    if engine == "online-counted":
        return compute_features(clicks, "online", spec=spec, store=MemoryStore(spec, incremental_from=0))
    return compute_features(clicks, engine, spec=spec)


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_real_sample_duckdb_vectorized_online_agree(sample_clicks):
    reference = compute_features(sample_clicks, "duckdb")
    assert len(reference) == 100_000
    # the sample has real signal in the window features, so the comparison is not of all-zero columns
    assert reference["clicks_ip_3601s_28800s"].max() > 50
    assert reference["secs_since_prev_ip"].notna().mean() > 0.3
    for engine in FAST_ENGINES:
        assert_same(reference, fast(sample_clicks, engine))


def test_real_sample_families_beyond_the_ip_agree(sample_clicks):
    reference = compute_features(sample_clicks, "duckdb", spec=WIDE_SPEC)
    assert reference["distinct_ip_per_app_86400s"].max() > 1000  # real reach, not a column of zeros
    assert reference["clicks_device_os_1s_3600s"].max() > 300  # the sample holds ~1,000 clicks an hour
    assert (reference["distinct_ip_per_channel_3600s"] < reference["distinct_ip_per_channel_86400s"]).any()
    for engine in FAST_ENGINES:
        assert_same(reference, fast(sample_clicks, engine, WIDE_SPEC))


@pytest.mark.spark
def test_real_sample_spark_agrees(sample_clicks, spark):
    assert_same(compute_features(sample_clicks, "vectorized"), compute_features(sample_clicks, "spark", spark=spark))


def test_tricky_stream_all_fast_engines_agree():
    clicks = tricky_stream()
    assert clicks["click_time"].is_monotonic_increasing is False
    assert clicks.drop(columns="row_id").duplicated().sum() >= 200
    reference = compute_features(clicks, "duckdb")
    for engine in FAST_ENGINES:
        assert_same(reference, fast(clicks, engine))


@pytest.mark.spark
def test_tricky_stream_spark_agrees(spark):
    clicks = tricky_stream(1500, seed=3)
    assert_same(compute_features(clicks, "duckdb"), compute_features(clicks, "spark", spark=spark))
    assert_same(compute_features(clicks, "vectorized", spec=WIDE_SPEC),
                compute_features(clicks, "spark", spec=WIDE_SPEC, spark=spark))


def test_result_does_not_depend_on_row_order():
    clicks = tricky_stream(800, seed=5)
    shuffled = clicks.sample(frac=1.0, random_state=1)
    assert_same(compute_features(clicks, "vectorized"), compute_features(shuffled, "vectorized"))


streams = st.lists(
    st.tuples(
        st.integers(0, 3),  # ip
        st.integers(0, 2),  # app
        st.integers(0, 1),  # device
        st.integers(0, 1),  # os
        st.integers(0, 2),  # channel
        # seconds chosen so that every band edge (300, 3600, 28800) is hit exactly and just missed
        st.sampled_from([0, 1, 299, 300, 301, 3599, 3600, 3601, 28799, 28800, 28801, 28802, 40000])
        | st.integers(0, 60_000),
    ),
    min_size=1,
    max_size=60,
)


def _frame(rows: list[tuple[int, ...]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["ip", "app", "device", "os", "channel", "click_time"])
    df = df.astype({"ip": "uint32", "app": "uint16", "device": "uint16", "os": "uint16", "channel": "uint16"})
    df["click_time"] = df["click_time"].astype(np.int64) + 1_509_000_000
    df.insert(0, "row_id", np.arange(len(df), dtype=np.int64))
    return df


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams)
def test_property_engines_agree(rows):
    clicks = _frame(rows)
    reference = compute_features(clicks, "duckdb")
    for engine in FAST_ENGINES:
        assert_same(reference, fast(clicks, engine))


wide_streams = st.lists(
    st.tuples(
        st.integers(0, 3), st.integers(0, 2), st.integers(0, 1), st.integers(0, 1), st.integers(0, 2),
        # every edge of the wide spec (3600 and 86400 besides the seed's) hit exactly and just missed
        st.sampled_from([0, 1, 3599, 3600, 3601, 28800, 28801, DAY - 1, DAY, DAY + 1, DAY + 2, 100_000])
        | st.integers(0, 2 * DAY),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wide_streams)
def test_property_families_beyond_the_ip_agree(rows):
    clicks = _frame(rows)
    reference = compute_features(clicks, "duckdb", spec=WIDE_SPEC)
    for engine in FAST_ENGINES:
        assert_same(reference, fast(clicks, engine, WIDE_SPEC))


@pytest.mark.spark
def test_property_spark_agrees(spark):
    # Spark costs seconds per query, so the property runs on fewer examples, one session.
    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(streams)
    def check(rows):
        clicks = _frame(rows)
        assert_same(compute_features(clicks, "vectorized"), compute_features(clicks, "spark", spark=spark))

    check()
