"""The checked-in BigQuery SQL is current, strict BigQuery, and computes the spec (transpiled to DuckDB)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import sqlglot
from sqlglot import exp

from attribution.features.compute import compute_features, conform_output
from attribution.features.engines.sql import DIALECTS, bigquery_file_text, render
from attribution.features.spec import DEFAULT_SPEC

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


def bigquery_on_duckdb(clicks: pd.DataFrame) -> pd.DataFrame:
    """Run sql/features.sql, transpiled by sqlglot, on DuckDB over a TIMESTAMP click table."""
    tree = sqlglot.parse_one(bigquery_file_text(), read="bigquery")
    tree = exp.replace_tables(tree, {"attribution.clicks": "bq_clicks"})
    table = clicks[["row_id", "ip", "app", "device", "os", "channel"]].copy()
    table["is_attributed"] = clicks.get("is_attributed", 0)
    table["click_time"] = pd.to_datetime(clicks["click_time"], unit="s", utc=True)
    con = duckdb.connect()
    con.register("bq_clicks", table)
    return con.sql(tree.sql(dialect="duckdb")).df()


def test_bigquery_sql_transpiled_matches_duckdb_engine(sample_clicks):
    got = conform_output(bigquery_on_duckdb(sample_clicks), sample_clicks, DEFAULT_SPEC)
    pd.testing.assert_frame_equal(compute_features(sample_clicks, "duckdb"), got, check_exact=True)
