"""The checked-in BigQuery SQL is current, strict BigQuery, and computes the spec (transpiled to DuckDB)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import sqlglot

from attribution.features.bigquery import run_on_duckdb
from attribution.features.compute import compute_features, conform_output
from attribution.features.engines.sql import BIGQUERY_SOURCE, DIALECTS, bigquery_file_text, render
from attribution.features.spec import DEFAULT_SPEC, FAMILIES, spec_with

BIGQUERY_TABLE = BIGQUERY_SOURCE.strip("`")

ROOT = Path(__file__).resolve().parents[1]


def test_checked_in_sql_is_current():
    assert (ROOT / "sql" / "features.sql").read_text() == bigquery_file_text(), "run `make sql` and commit"


def test_bigquery_sql_parses_strictly():
    tree = sqlglot.parse_one(bigquery_file_text(), read="bigquery", error_level=sqlglot.ErrorLevel.RAISE)
    names = {s.alias_or_name for s in tree.expressions}
    assert set(DEFAULT_SPEC.feature_names) <= names


def test_every_dialect_renders_every_feature_once():
    for dialect in DIALECTS:
        sql = render(DEFAULT_SPEC, dialect)
        for name in DEFAULT_SPEC.feature_names:
            assert sql.count(f" AS {name}\n") + sql.count(f" AS {name},") == 1, (dialect, name)


def test_bigquery_sql_transpiled_matches_duckdb_engine(sample_clicks):
    """sql/features.sql, transpiled by sqlglot, on DuckDB over a TIMESTAMP click table."""
    got = conform_output(run_on_duckdb(bigquery_file_text(), sample_clicks, BIGQUERY_TABLE), sample_clicks, DEFAULT_SPEC)
    pd.testing.assert_frame_equal(compute_features(sample_clicks, "duckdb"), got, check_exact=True)


def test_bigquery_sql_of_the_families_beyond_the_ip_matches(sample_clicks):
    wide = spec_with(*FAMILIES)
    sql = render(wide, "bigquery", BIGQUERY_SOURCE, passthrough=("is_attributed",))
    got = conform_output(run_on_duckdb(sql, sample_clicks, BIGQUERY_TABLE), sample_clicks, wide)
    pd.testing.assert_frame_equal(compute_features(sample_clicks, "vectorized", spec=wide), got, check_exact=True)
