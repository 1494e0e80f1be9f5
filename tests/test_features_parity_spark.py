"""Spark SQL computes the spec as the other engines do (a file of its own: its Spark session and ~3 minutes
run on another pytest-xdist worker than the fast engines' parity tests)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from attribution.features.compute import compute_features
from tests.conftest import tricky_stream
from tests.test_features_parity import WIDE_SPEC, _frame, assert_same, streams

pytestmark = pytest.mark.spark


def test_real_sample_spark_agrees(sample_clicks, spark):
    assert_same(compute_features(sample_clicks, "vectorized"), compute_features(sample_clicks, "spark", spark=spark))


def test_tricky_stream_spark_agrees(spark):
    clicks = tricky_stream(1500, seed=3)
    assert_same(compute_features(clicks, "duckdb"), compute_features(clicks, "spark", spark=spark))
    assert_same(compute_features(clicks, "vectorized", spec=WIDE_SPEC),
                compute_features(clicks, "spark", spec=WIDE_SPEC, spark=spark))


def test_property_spark_agrees(spark):
    # Spark costs seconds per query, so the property runs on fewer examples, one session.
    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(streams)
    def check(rows):
        clicks = _frame(rows)
        assert_same(compute_features(clicks, "vectorized"), compute_features(clicks, "spark", spark=spark))

    check()
