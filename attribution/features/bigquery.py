"""Feature extraction on BigQuery: one query job whose `CREATE OR REPLACE TABLE ... AS` writes the features
into a staging table (partitioned by day, clustered by ip, expiring on its own), then an `EXPORT DATA`
statement that writes that table as Parquet to GCS (where the next pipeline step reads it). Both are plain
statements, so BigQuery and the BigQuery emulator (`attribution run --cloud emulated`) run the same jobs.

    jobs = build_feature_jobs("proj.ds.clicks", "proj.staging.features_20171109", "gs://b/features/*.parquet")
    run_feature_jobs(bigquery.Client(project="proj"), jobs)

The SQL is sql/features.sql (rendered from the feature spec, tested to be current) with its placeholder
source table replaced through sqlglot's `exp.replace_tables`, optionally restricted to a time range with
query parameters. Building the jobs needs no network, so tests inspect `QueryJob(...).to_api_repr()`;
`run_on_duckdb` runs the same BigQuery SQL, transpiled by sqlglot, on DuckDB.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import sqlglot
from sqlglot import exp

from attribution.features.engines.sql import BIGQUERY_SOURCE, bigquery_file_text
from attribution.features.spec import DEFAULT_SPEC

log = logging.getLogger(__name__)
SQL_FILE = Path(__file__).resolve().parents[2] / "sql" / "features.sql"
PLACEHOLDER_TABLE = BIGQUERY_SOURCE.strip("`")  # "attribution.clicks"
# The full TalkingData table is ~185M rows x 8 columns (~12 GB scanned); 100 GiB stops a runaway query.
DEFAULT_MAXIMUM_BYTES_BILLED = 100 * 2**30
USD_PER_TIB = 6.25  # on-demand analysis price, for the dry-run estimate in the logs and the step's metadata
START_PARAM, END_PARAM = "start_time", "end_time"
# The staging table outlives its run by this much (the export has read it by then); the dataset's default
# expiration (manifests/cloud/bigquery.yaml) is the backstop for tables made without this option.
STAGING_EXPIRATION_HOURS = 24
# Integer-range partitions of a day each over click_time (epoch seconds, as the features hold it): from
# 2017-01-01 for 9,000 days, under BigQuery's 10,000-partition limit.
PARTITION_ORIGIN, PARTITION_DAYS = 1_483_228_800, 9_000


def feature_sql_text() -> str:
    """sql/features.sql when the source tree is at hand, else the same text rendered from the spec (the
    pipeline image installs the package without sql/; tests/test_sql.py keeps the two identical)."""
    return SQL_FILE.read_text() if SQL_FILE.is_file() else bigquery_file_text()


def _clicks_cte(tree: exp.Expression) -> exp.Select:
    for cte in tree.find_all(exp.CTE):
        if cte.alias == "clicks":
            return cte.this
    raise ValueError("feature SQL has no `clicks` CTE to restrict")


def feature_query(source_table: str, time_range: bool = False, sql: str | None = None) -> str:
    """The feature SQL reading `source_table` (project.dataset.table); with time_range, only clicks with
    @start_time <= click_time < @end_time (TIMESTAMP query parameters)."""
    if source_table.count(".") not in (1, 2) or "`" in source_table:
        raise ValueError(f"BigQuery table must be [project.]dataset.table, got {source_table!r}")
    tree = sqlglot.parse_one(sql or feature_sql_text(), read="bigquery", error_level=sqlglot.ErrorLevel.RAISE)
    tree = exp.replace_tables(tree, {PLACEHOLDER_TABLE: f"`{source_table}`"}, dialect="bigquery")
    if time_range:
        # Read the window's worth of history before the range, so its first clicks get full features
        # (partition pruning still limits the scan to the range's days plus one), then keep the range's rows.
        history = f"TIMESTAMP_SUB(@{START_PARAM}, INTERVAL {DEFAULT_SPEC.max_window} SECOND)"
        _clicks_cte(tree).where(f"click_time >= {history} AND click_time < @{END_PARAM}", dialect="bigquery",
                                copy=False)
        tree = (
            exp.select("*")
            .from_(tree.subquery("features"))
            .where(f"features.click_time >= UNIX_SECONDS(@{START_PARAM})", dialect="bigquery")
        )
    return tree.sql(dialect="bigquery", pretty=True)


@dataclass
class FeatureJobs:
    """What the extraction submits: the CREATE TABLE ... AS query (with its config) and the EXPORT DATA
    statement that writes its table to export_uri."""

    query: str
    query_config: object  # google.cloud.bigquery.QueryJobConfig
    destination: object  # google.cloud.bigquery.TableReference
    export_uri: str
    export_query: str
    export_config: object  # google.cloud.bigquery.QueryJobConfig
    location: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


def create_table_as(destination_table: str, select_sql: str, expiration_hours: int = STAGING_EXPIRATION_HOURS) -> str:
    """`CREATE OR REPLACE TABLE` destination (daily integer-range partitions of click_time, clustered by ip,
    expiring after expiration_hours) `AS` select_sql: a rerun replaces its own table."""
    last = PARTITION_ORIGIN + 86_400 * PARTITION_DAYS
    return (f"CREATE OR REPLACE TABLE `{destination_table}`\n"
            f"PARTITION BY RANGE_BUCKET(click_time, GENERATE_ARRAY({PARTITION_ORIGIN}, {last}, 86400))\n"
            "CLUSTER BY ip\n"
            f"OPTIONS (expiration_timestamp = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL {int(expiration_hours)} HOUR),\n"
            "         labels = [('app', 'attribution'), ('step', 'features')])\n"
            f"AS\n{select_sql}")


def export_statement(source_table: str, export_uri: str) -> str:
    """EXPORT DATA of source_table as Snappy Parquet to export_uri (one '*' wildcard: BigQuery shards)."""
    return (f"EXPORT DATA OPTIONS (uri = '{export_uri}', format = 'PARQUET', compression = 'SNAPPY', overwrite = true)\n"
            f"AS SELECT * FROM `{source_table}`")


def _timestamp(value: str | dt.datetime) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    stamp = dt.datetime.fromisoformat(str(value))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def build_feature_jobs(
    source_table: str,
    destination_table: str,
    export_uri: str,
    start: str | dt.datetime | None = None,
    end: str | dt.datetime | None = None,
    location: str | None = None,
    labels: dict[str, str] | None = None,
    maximum_bytes_billed: int = DEFAULT_MAXIMUM_BYTES_BILLED,
) -> FeatureJobs:
    """The CREATE TABLE ... AS query into destination_table (replaced on rerun, so retries are idempotent;
    standard SQL, time-range parameters, capped bytes) and the Parquet export (`export_uri` must be a gs://
    wildcard)."""
    from google.cloud import bigquery

    if not export_uri.startswith("gs://") or export_uri.count("*") != 1 or "'" in export_uri:
        raise ValueError(f"export URI must be a gs:// path with one '*' wildcard, got {export_uri!r}")
    if (start is None) != (end is None):
        raise ValueError("give both start and end of the time range, or neither")
    labels = {"app": "attribution", "step": "features", **(labels or {})}
    params = []
    if start is not None:
        params = [
            bigquery.ScalarQueryParameter(START_PARAM, "TIMESTAMP", _timestamp(start)),
            bigquery.ScalarQueryParameter(END_PARAM, "TIMESTAMP", _timestamp(end)),
        ]
    destination = bigquery.TableReference.from_string(destination_table)
    query_config = bigquery.QueryJobConfig(
        use_legacy_sql=False,
        query_parameters=params,
        labels=labels,
        priority=bigquery.QueryPriority.BATCH,
        maximum_bytes_billed=int(maximum_bytes_billed),  # BigQuery fails the job rather than bill more
    )
    export_config = bigquery.QueryJobConfig(use_legacy_sql=False, labels=labels, priority=bigquery.QueryPriority.BATCH,
                                            maximum_bytes_billed=int(maximum_bytes_billed))
    table = f"{destination.project}.{destination.dataset_id}.{destination.table_id}"
    return FeatureJobs(create_table_as(table, feature_query(source_table, time_range=start is not None)), query_config,
                       destination, export_uri, export_statement(table, export_uri), export_config, location, labels)


def job_resources(jobs: FeatureJobs, client, job_prefix: str = "attribution-features") -> dict:
    """The REST bodies of both jobs as they would be sent (built with the real job classes, not sent)."""
    from google.cloud import bigquery

    query = bigquery.QueryJob(f"{job_prefix}-query", jobs.query, client=client, job_config=jobs.query_config)
    export = bigquery.QueryJob(f"{job_prefix}-export", jobs.export_query, client=client, job_config=jobs.export_config)
    return {"query": query.to_api_repr(), "export": export.to_api_repr()}


def dry_run(client, jobs: FeatureJobs) -> dict:
    """BigQuery's own estimate of the query (a dry run: nothing runs, nothing is billed)."""
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False, use_legacy_sql=False,
                                     query_parameters=jobs.query_config.query_parameters)
    job = client.query(jobs.query, job_config=config, location=jobs.location)
    scanned = int(job.total_bytes_processed or 0)
    return {"bytes_processed_estimate": scanned, "usd_estimate": round(scanned / 2**40 * USD_PER_TIB, 4)}


def run_feature_jobs(client, jobs: FeatureJobs, timeout_s: float = 6 * 3600) -> dict:
    """Estimate the query with a dry run and refuse it past maximum_bytes_billed; then run the query and the
    export; returns what happened (estimate, rows, bytes billed, job ids)."""
    estimate = dry_run(client, jobs)
    limit = jobs.query_config.maximum_bytes_billed
    log.info("bigquery: dry run: %d bytes (~$%.4f), limit %s", estimate["bytes_processed_estimate"],
             estimate["usd_estimate"], limit)
    if limit is not None and estimate["bytes_processed_estimate"] > int(limit):
        raise ValueError(f"the feature query would scan {estimate['bytes_processed_estimate']} bytes "
                         f"(~${estimate['usd_estimate']}), over maximum_bytes_billed {limit}: narrow the time range "
                         "(days_back) or raise the limit")
    qjob = client.query(jobs.query, job_config=jobs.query_config, location=jobs.location)
    log.info("bigquery: query job %s -> %s", qjob.job_id, jobs.destination)
    qjob.result(timeout=timeout_s)
    table = client.get_table(jobs.destination)
    ejob = client.query(jobs.export_query, job_config=jobs.export_config, location=jobs.location)
    log.info("bigquery: export job %s -> %s", ejob.job_id, jobs.export_uri)
    ejob.result(timeout=timeout_s)
    return {
        **estimate, "maximum_bytes_billed": int(limit) if limit is not None else None,
        "query_job": qjob.job_id, "export_job": ejob.job_id, "rows": int(table.num_rows or 0),
        "bytes_billed": int(qjob.total_bytes_billed or 0), "destination": str(jobs.destination),
        "export_uri": jobs.export_uri,
    }


def window_end(snapshot_date: str = "", now: dt.datetime | None = None) -> str:
    """The exclusive end (a UTC date) of the training range: the day after snapshot_date when one pins
    the input, else today (the day the run starts, so a daily recurring run slides by a day)."""
    if snapshot_date:
        return (dt.date.fromisoformat(snapshot_date) + dt.timedelta(days=1)).isoformat()
    return (now or dt.datetime.now(dt.UTC)).date().isoformat()


def time_range(end_date: str, days_back: int) -> tuple[dt.datetime, dt.datetime] | None:
    """[start, end) of `days_back` whole days ending at end_date (exclusive); None = the whole table."""
    if days_back <= 0:
        return None
    end = dt.datetime.fromisoformat(end_date).replace(tzinfo=dt.UTC)
    return end - dt.timedelta(days=days_back), end


# ---- the same SQL on DuckDB (tests, and a dry run of the BigQuery path without a project) -------------
def transpile_to_duckdb(sql: str, tables: dict[str, str] | None = None) -> str:
    tree = sqlglot.parse_one(sql, read="bigquery")
    if tables:
        tree = exp.replace_tables(tree, tables, dialect="bigquery")
    return tree.sql(dialect="duckdb")


def run_on_duckdb(sql: str, clicks, table: str, params: dict | None = None):
    """Run BigQuery feature SQL on DuckDB over a click frame (epoch-second click_time), with the BigQuery
    table `table` mapped to it and @parameters bound. Returns a DataFrame."""
    import duckdb
    import pandas as pd

    frame = clicks[["row_id", "ip", "app", "device", "os", "channel"]].copy()
    frame["is_attributed"] = clicks.get("is_attributed", 0)
    frame["click_time"] = pd.to_datetime(clicks["click_time"], unit="s", utc=True)
    text = transpile_to_duckdb(sql, {table: "bq_clicks"})
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("bq_clicks", frame)
        # sqlglot writes BigQuery's @name as DuckDB's $name; bind by name.
        return con.execute(text, {k: _timestamp(v) for k, v in (params or {}).items()}).df()
    finally:
        con.close()


CLICK_TABLE_SCHEMA = [  # (name, type, mode): the Kaggle columns as the feature SQL reads them
    ("row_id", "INT64", "REQUIRED"), ("ip", "INT64", "REQUIRED"), ("app", "INT64", "REQUIRED"),
    ("device", "INT64", "REQUIRED"), ("os", "INT64", "REQUIRED"), ("channel", "INT64", "REQUIRED"),
    ("click_time", "TIMESTAMP", "REQUIRED"), ("attributed_time", "TIMESTAMP", "NULLABLE"),
    ("is_attributed", "INT64", "NULLABLE"),
]
# Columns the feature query reads: 8 x 8 bytes per row (INT64 and TIMESTAMP are 8 bytes in BigQuery).
QUERY_BYTES_PER_ROW = 8 * 8


def build_click_table_load(source_uris: list[str], table: str, location: str | None = None):
    """Load job for the click table the feature query reads: partitioned by day of click_time (a time-range
    run scans only its days) and clustered by ip (the key every window partitions on). Parquet written by
    `attribution.io.write_clicks` plus a row_id column is the expected input."""
    from google.cloud import bigquery

    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        schema=[bigquery.SchemaField(n, t, mode=m) for n, t, m in CLICK_TABLE_SCHEMA],
        time_partitioning=bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field="click_time"),
        clustering_fields=["ip"],
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        labels={"app": "attribution", "step": "load-clicks"},
    )
    return bigquery.TableReference.from_string(table), list(source_uris), config


def scanned_bytes(rows: int) -> int:
    """On-demand bytes the feature query scans for `rows` clicks (no time filter)."""
    return rows * QUERY_BYTES_PER_ROW


BIGQUERY_EMULATOR_HOST = "BIGQUERY_EMULATOR_HOST"  # google-cloud-bigquery's own variable for another endpoint


def bigquery_client(project: str, endpoint: str | None = None, location: str | None = None):
    """google-cloud-bigquery's Client for `project` (jobs in `location`, if given): on an emulator at
    `endpoint` (or BIGQUERY_EMULATOR_HOST) with anonymous credentials (an emulator checks none), else on
    BigQuery with the ambient credentials (Workload Identity; nothing here holds a key)."""
    from google.cloud import bigquery

    endpoint = endpoint or os.environ.get(BIGQUERY_EMULATOR_HOST)
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(project=project, location=location, credentials=AnonymousCredentials(),
                               client_options={"api_endpoint": endpoint})
    return bigquery.Client(project=project, location=location)
