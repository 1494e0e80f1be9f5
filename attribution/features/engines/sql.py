"""Render the feature spec as SQL for BigQuery, DuckDB and Spark.

One query shape for all three dialects, built only from constructs they share (RANGE frames on integer
epoch seconds, LAG/LEAD, running SUM, CASE), so the BigQuery text also transpiles to DuckDB for testing.
Every frame runs from UNBOUNDED PRECEDING, so each window is one incremental pass per key group: a band
count is a difference of two running counts, and time-since-previous reads the running MAX.
Per-dialect pieces are the epoch-seconds expression and integer division.

Distinct counts over a sliding frame are not portable (BigQuery and Spark have no COUNT(DISTINCT) over a
frame, and ARRAY_AGG over an 8 h frame is quadratic for a bot IP), so they use an interval trick that is
linear after one sort: a value v of group g is "in the window" of a click at second t iff some click of
(g, v) lies in [t - W, t - 1], i.e. t lies in the union of [s + 1, s + W] over v's seconds s. Merging
those intervals per (g, v) gives +1 markers at run starts and -1 markers after run ends; the distinct
count at t is the running sum of markers at or before t.
"""

from __future__ import annotations

from typing import Literal

from attribution.features.spec import DEFAULT_SPEC, FeatureSpec

Dialect = Literal["bigquery", "duckdb", "spark"]
DIALECTS: tuple[Dialect, ...] = ("bigquery", "duckdb", "spark")
BIGQUERY_SOURCE = "`attribution.clicks`"  # replaced by the real table when the job is built


def _time_expr(dialect: Dialect) -> str:
    # BigQuery tables hold click_time as TIMESTAMP; DuckDB/Spark engines feed integer epoch seconds.
    return "UNIX_SECONDS(click_time)" if dialect == "bigquery" else "CAST(click_time AS BIGINT)"


def _hour_expr(dialect: Dialect, col: str) -> str:
    return {
        "bigquery": f"MOD(DIV({col}, 3600), 24)",
        "duckdb": f"(({col} // 3600) % 24)",
        "spark": f"PMOD({col} DIV 3600, 24)",
    }[dialect]


def _lit(x: float) -> str:
    # Exponent notation makes every dialect read a DOUBLE (not a DECIMAL), and repr round-trips exactly.
    return f"{x!r}" if "e" in repr(x) else f"{x!r}E0"


def _hour_case(dialect: Dialect, which: int, col: str) -> str:
    whens = " ".join(f"WHEN {h} THEN {_lit(v[which])}" for h, v in enumerate(FeatureSpec.hour_table()))
    return f"CASE {_hour_expr(dialect, col)} {whens} END"


def render(
    spec: FeatureSpec = DEFAULT_SPEC,
    dialect: Dialect = "duckdb",
    source: str = "clicks_input",
    passthrough: tuple[str, ...] = (),
) -> str:
    """SQL returning row_id, the click's ids, click_time as epoch seconds, the passthrough columns and one
    column per feature, in no particular row order."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; choose one of {DIALECTS}")
    bigint = "INT64" if dialect == "bigquery" else "BIGINT"
    extra = "".join(f", {c}" for c in passthrough)
    ctes = [
        (
            f"clicks AS (\n  SELECT row_id, ip, app, device, os, channel, {_time_expr(dialect)} AS t{extra}\n"
            f"  FROM {source}\n)"
        )
    ]
    selects = ["c.row_id", "c.ip", "c.app", "c.device", "c.os", "c.channel", "c.t AS click_time"]
    selects += [f"c.{p}" for p in passthrough]
    joins = []
    # Frames all start at UNBOUNDED PRECEDING: engines grow such a frame row by row, while a frame with two
    # offsets is re-aggregated whenever it moves (Spark does, over every row of an 8 h frame of a bot IP).
    def upto(part: str, offset: int, agg: str = "COUNT(*)") -> str:
        return f"{agg} OVER (PARTITION BY {part} ORDER BY c.t RANGE BETWEEN UNBOUNDED PRECEDING AND {offset} PRECEDING)"

    for c in spec.counts:
        part = ", ".join(c.keys)
        for band, name in zip(c.bands, c.names()):
            # clicks in [t - end, t - start] = clicks up to t - start minus clicks up to t - end - 1
            selects.append(f"{upto(part, band.start)} - {upto(part, band.end + 1)} AS {name}")
    for p in spec.since_previous:
        part = ", ".join(p.keys)
        # the latest earlier second, kept when it lies within the window
        latest = upto(part, 1, "MAX(c.t)")
        selects.append(f"CASE WHEN c.t - {latest} <= {p.window} THEN c.t - {latest} END AS {p.name}")
    for i, d in enumerate(spec.distincts):
        keys = ", ".join(d.keys)
        ctes.append(
            f"d{i}_seen AS (\n"
            f"  SELECT {keys}, {d.of}, t,\n"
            f"    LAG(t) OVER (PARTITION BY {keys}, {d.of} ORDER BY t) AS prev_t,\n"
            f"    LEAD(t) OVER (PARTITION BY {keys}, {d.of} ORDER BY t) AS next_t\n"
            f"  FROM (SELECT DISTINCT {keys}, {d.of}, t FROM clicks) AS u\n)"
        )
        ctes.append(
            f"d{i}_marks AS (\n"
            f"  SELECT {keys}, t + 1 AS at_t, 1 AS w, CAST(NULL AS {bigint}) AS row_id FROM d{i}_seen\n"
            f"    WHERE prev_t IS NULL OR t - prev_t > {d.window}\n"
            f"  UNION ALL\n"
            f"  SELECT {keys}, t + {d.window + 1} AS at_t, -1 AS w, CAST(NULL AS {bigint}) AS row_id FROM d{i}_seen\n"
            f"    WHERE next_t IS NULL OR next_t - t > {d.window}\n"
            f"  UNION ALL\n"
            f"  SELECT {keys}, t AS at_t, 0 AS w, row_id FROM clicks\n)"
        )
        # RANGE ... CURRENT ROW includes peers, so markers at the click's own second are counted.
        ctes.append(
            f"d{i} AS (\n"
            f"  SELECT row_id, n FROM (\n"
            f"    SELECT row_id, SUM(w) OVER (PARTITION BY {keys} ORDER BY at_t "
            f"RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS n\n"
            f"    FROM d{i}_marks\n"
            f"  ) AS s WHERE row_id IS NOT NULL\n)"
        )
        selects.append(f"d{i}.n AS {d.name}")
        joins.append(f"JOIN d{i} ON d{i}.row_id = c.row_id")
    if spec.hour_of_day:
        selects.append(f"{_hour_case(dialect, 0, 'c.t')} AS hour_sin")
        selects.append(f"{_hour_case(dialect, 1, 'c.t')} AS hour_cos")
    body = ",\n  ".join(selects)
    join_sql = ("\n" + "\n".join(joins)) if joins else ""
    with_sql = ",\n".join(ctes)
    return f"WITH {with_sql}\nSELECT\n  {body}\nFROM clicks AS c{join_sql}\n"


def bigquery_file_text(spec: FeatureSpec = DEFAULT_SPEC) -> str:
    """The checked-in sql/features.sql: BigQuery Standard SQL over the click table."""
    header = (
        "-- Generated from attribution/features/spec.py; do not edit by hand (`make sql` regenerates it).\n"
        f"-- Feature spec hash: {spec.hash}\n"
        f"-- Source table placeholder {BIGQUERY_SOURCE} is replaced when the query job is built.\n"
        "-- Input: click table with row_id INT64, ip, app, device, os, channel INT64, click_time TIMESTAMP,\n"
        "--        is_attributed INT64 (training data); partition by DATE(click_time), cluster by ip.\n"
    )
    return header + render(spec, "bigquery", BIGQUERY_SOURCE, passthrough=("is_attributed",))
