"""BigQuery extraction: the jobs are built with the real client classes (inspected, never sent), and their
SQL, transpiled by sqlglot, gives on DuckDB exactly the DuckDB engine's features."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlglot
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from sqlglot import exp

from attribution.features import bigquery as bq
from attribution.features.compute import compute_features, conform_output
from attribution.features.spec import DEFAULT_SPEC

SOURCE = "my-project.attribution.clicks_2017"
DEST = "my-project.attribution_staging.features_20171109"
EXPORT = "gs://attribution-pipeline/run-1/extract-features/features/part-*.parquet"


@pytest.fixture(scope="module")
def client():
    return bigquery.Client(project="my-project", credentials=AnonymousCredentials())  # no network


def select_of(ddl: str) -> str:
    """The SELECT of a CREATE TABLE ... AS statement (sqlglot parses BigQuery's DDL)."""
    tree = sqlglot.parse_one(ddl, read="bigquery")
    assert isinstance(tree, exp.Create) and tree.args.get("replace"), ddl[:200]
    return tree.expression.sql(dialect="bigquery")


def test_query_and_export_job_configuration(client):
    jobs = bq.build_feature_jobs(SOURCE, DEST, EXPORT, start="2017-11-07", end="2017-11-09", location="US")
    assert isinstance(jobs.query_config, bigquery.QueryJobConfig)
    res = bq.job_resources(jobs, client)
    q = res["query"]["configuration"]["query"]
    # CREATE OR REPLACE TABLE ... AS: the table is the statement's, so no destination in the job config;
    # partitioned by day of click_time, clustered by ip, expiring on its own.
    assert "destinationTable" not in q and "writeDisposition" not in q
    ddl = q["query"]
    assert ddl.startswith(f"CREATE OR REPLACE TABLE `{DEST}`")
    tree = sqlglot.parse_one(ddl, read="bigquery")
    props = tree.args["properties"].sql(dialect="bigquery")
    assert "RANGE_BUCKET(click_time, GENERATE_ARRAY(1483228800" in props and "86400))" in props
    assert "CLUSTER BY ip" in props and "expiration_timestamp" in props
    assert f"INTERVAL {bq.STAGING_EXPIRATION_HOURS} HOUR" in ddl
    assert q["useLegacySql"] is False and q["parameterMode"] == "NAMED"
    params = {p["name"]: (p["parameterType"]["type"], p["parameterValue"]["value"]) for p in q["queryParameters"]}
    assert params == {"start_time": ("TIMESTAMP", "2017-11-07 00:00:00+00:00"),
                      "end_time": ("TIMESTAMP", "2017-11-09 00:00:00+00:00")}
    assert f"`{SOURCE}`" in q["query"] and "`attribution.clicks`" not in q["query"].replace("/*", "").split("*/")[-1]
    assert "@start_time" in q["query"] and "@end_time" in q["query"]
    e = res["export"]["configuration"]["query"]
    export = sqlglot.parse_one(e["query"], read="bigquery")
    assert isinstance(export, exp.Export)
    options = {p.sql(dialect="bigquery").split("=", 1)[0].lower(): p.sql(dialect="bigquery").split("=", 1)[1]
               for p in export.find_all(exp.Property)}
    assert options == {"uri": f"'{EXPORT}'", "format": "'PARQUET'", "compression": "'SNAPPY'", "overwrite": "TRUE"}
    assert e["query"].endswith(f"AS SELECT * FROM `{DEST}`")  # the table the query job just wrote
    assert int(e["maximumBytesBilled"]) == bq.DEFAULT_MAXIMUM_BYTES_BILLED
    assert res["query"]["configuration"]["labels"]["app"] == "attribution"


def test_whole_table_has_no_parameters(client):
    jobs = bq.build_feature_jobs(SOURCE, DEST, EXPORT)
    q = bq.job_resources(jobs, client)["query"]["configuration"]["query"]
    assert not q.get("queryParameters") and "@start_time" not in q["query"]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="gs://"):
        bq.build_feature_jobs(SOURCE, DEST, "/tmp/features.parquet")
    with pytest.raises(ValueError, match="both"):
        bq.build_feature_jobs(SOURCE, DEST, EXPORT, start="2017-11-07")
    with pytest.raises(ValueError, match="dataset.table"):
        bq.feature_query("clicks")


def test_sliding_window_and_snapshot():
    assert bq.window_end("2017-11-08") == "2017-11-09"
    assert bq.time_range("2017-11-09", 2) == (pd.Timestamp("2017-11-07", tz="UTC"), pd.Timestamp("2017-11-09", tz="UTC"))
    assert bq.time_range("2017-11-09", 0) is None


def test_query_sql_on_duckdb_equals_duckdb_engine(sample_clicks, client):
    """The query the job sends, run on DuckDB, gives the DuckDB engine's features bit for bit."""
    jobs = bq.build_feature_jobs(SOURCE, DEST, EXPORT)
    sql = select_of(bq.job_resources(jobs, client)["query"]["configuration"]["query"]["query"])
    got = conform_output(bq.run_on_duckdb(sql, sample_clicks, SOURCE), sample_clicks, DEFAULT_SPEC)
    pd.testing.assert_frame_equal(compute_features(sample_clicks, "duckdb"), got, check_exact=True)


def test_time_range_query_on_duckdb(sample_clicks):
    start, end = "2017-11-08 00:00:00", "2017-11-09 00:00:00"
    jobs = bq.build_feature_jobs(SOURCE, DEST, EXPORT, start=start, end=end)
    out = bq.run_on_duckdb(select_of(jobs.query), sample_clicks, SOURCE, {"start_time": start, "end_time": end})
    t = sample_clicks["click_time"]
    in_range = (t >= pd.Timestamp(start, tz="UTC").timestamp()) & (t < pd.Timestamp(end, tz="UTC").timestamp())
    inside = sample_clicks[in_range]
    assert 0 < len(inside) < len(sample_clicks)
    got = conform_output(out, inside, DEFAULT_SPEC)
    # the range's rows get the features of the whole stream: the 8 h before the range are read as history
    whole = compute_features(sample_clicks, "duckdb")
    want = whole[in_range.to_numpy()[whole["row_id"].to_numpy()]].reset_index(drop=True)
    pd.testing.assert_frame_equal(want, got, check_exact=True)
    assert (want["clicks_ip_3601s_28800s"] != compute_features(inside, "duckdb")["clicks_ip_3601s_28800s"]).any()


def test_sql_comes_from_the_checked_in_file():
    assert bq.feature_sql_text() == bq.SQL_FILE.read_text()


def test_click_table_is_partitioned_by_day_and_clustered_by_ip(client):
    table, uris, config = bq.build_click_table_load(["gs://attribution-data/clicks/*.parquet"], SOURCE)
    job = bigquery.LoadJob("load-1", uris, table, client, job_config=config)
    load = job.to_api_repr()["configuration"]["load"]
    assert load["timePartitioning"] == {"type": "DAY", "field": "click_time"}
    assert load["clustering"] == {"fields": ["ip"]}
    assert load["sourceFormat"] == "PARQUET" and load["destinationTable"]["tableId"] == "clicks_2017"
    names = [f["name"] for f in load["schema"]["fields"]]
    assert {"row_id", "ip", "app", "device", "os", "channel", "click_time", "is_attributed"} <= set(names)


def test_scanned_bytes_follow_the_columns_the_query_reads():
    import sqlglot

    tree = sqlglot.parse_one(bq.feature_sql_text(), read="bigquery")
    clicks_cte = next(c for c in tree.find_all(sqlglot.exp.CTE) if c.alias == "clicks")
    read = {col.name for col in clicks_cte.this.find_all(sqlglot.exp.Column)}
    types = {n: t for n, t, _ in bq.CLICK_TABLE_SCHEMA}
    assert read <= set(types) and len(read) == 8
    assert all(types[c] in ("INT64", "TIMESTAMP") for c in read)  # 8 bytes each
    assert bq.scanned_bytes(184_903_890) == 184_903_890 * 8 * len(read)
