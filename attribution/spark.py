"""One place that builds the SparkSession for features and distributed training.

Locally it is `local[N]`; on Spark-on-Kubernetes the Spark Operator supplies the master and executor
settings and `get_spark` only adds the session options the jobs rely on (UTC, Arrow transfers).
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession


def get_spark(app_name: str = "attribution", master: str | None = None, shuffle_partitions: int | None = None):
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Executors must run the same interpreter (and so the same xgboost/gensim) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    master = master or os.environ.get("SPARK_MASTER") or ("local[2]" if "SPARK_HOME" not in os.environ else None)
    if master:
        builder = builder.master(master)
    partitions = shuffle_partitions or int(os.environ.get("ATTRIBUTION_SHUFFLE_PARTITIONS", "8"))
    return (
        builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.shuffle.partitions", str(partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", os.environ.get("ATTRIBUTION_SPARK_DRIVER_MEMORY", "4g"))
        .config("spark.sql.adaptive.enabled", "true")
        .getOrCreate()
    )
