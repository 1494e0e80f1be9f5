"""The spec's SQL on Spark SQL (local mode here, Spark-on-Kubernetes in production)."""

from __future__ import annotations

import tempfile

import pandas as pd

from attribution.features.engines.sql import render
from attribution.features.spec import FeatureSpec
from attribution.platform.spark_session import arrow_safe, get_spark, shuffle_partitions_for

INPUT_VIEW = "clicks_input"


def compute_sdf(spark, clicks_view: str, spec: FeatureSpec, passthrough: tuple[str, ...] = ()):
    """Features as a Spark DataFrame over a registered click view (for the distributed path)."""
    return spark.sql(render(spec, "spark", clicks_view, passthrough=passthrough))


def compute(clicks: pd.DataFrame, spec: FeatureSpec, spark=None) -> pd.DataFrame:
    """Features of a click frame, with Parquet on both sides as on a cluster: a frame handed to
    createDataFrame becomes a driver-side LocalRelation, which the optimizer re-materialises for every
    reference of the clicks CTE (the driver ran out of heap at 1M rows), and toPandas collects the wide
    result through the driver too."""
    spark = spark or get_spark()
    cols = arrow_safe(clicks[["row_id", "ip", "app", "device", "os", "channel", "click_time"]])
    with tempfile.TemporaryDirectory(prefix="attribution-spark-") as tmp:
        cols.to_parquet(f"{tmp}/clicks.parquet", index=False)
        spark.read.parquet(f"{tmp}/clicks.parquet").createOrReplaceTempView(INPUT_VIEW)
        spark.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions_for(len(cols), minimum=2)))
        compute_sdf(spark, INPUT_VIEW, spec).write.parquet(f"{tmp}/features")
        return pd.read_parquet(f"{tmp}/features")
