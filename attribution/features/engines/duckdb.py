"""The embedded default engine: the spec's SQL on DuckDB."""

from __future__ import annotations

import duckdb
import pandas as pd

from attribution.features.engines.sql import render
from attribution.features.spec import FeatureSpec


def connect(memory_limit: str | None = None, temp_directory: str | None = None, threads: int | None = None):
    con = duckdb.connect()
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if temp_directory:
        con.execute(f"SET temp_directory = '{temp_directory}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    # Row order is restored from row_id afterwards; not preserving it lets DuckDB stream and spill.
    con.execute("SET preserve_insertion_order = false")
    return con


def compute(
    clicks: pd.DataFrame,
    spec: FeatureSpec,
    memory_limit: str | None = None,
    temp_directory: str | None = None,
    threads: int | None = None,
) -> pd.DataFrame:
    con = connect(memory_limit, temp_directory, threads)
    try:
        con.register("clicks_input", clicks[["row_id", "ip", "app", "device", "os", "channel", "click_time"]])
        return con.sql(render(spec, "duckdb", "clicks_input")).df()
    finally:
        con.close()
