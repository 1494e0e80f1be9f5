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
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", os.environ.get("ATTRIBUTION_SPARK_DRIVER_MEMORY", "4g"))
        .config("spark.sql.adaptive.enabled", "true")
        .getOrCreate()
    )


ROWS_PER_SHUFFLE_PARTITION = 250_000  # keeps a window partition's sort well inside one task's memory
ROWS_PER_XGB_WORKER = 1_000_000  # below this per worker, xgboost.spark spends more on sync than on trees


def shuffle_partitions_for(rows: int, minimum: int = 8) -> int:
    """Shuffle partitions for the feature SQL over `rows` clicks."""
    return max(minimum, -(-rows // ROWS_PER_SHUFFLE_PARTITION))


def xgb_workers_for(rows: int, available: int) -> int:
    """xgboost.spark workers for `rows` training rows, at most the cluster's task slots."""
    return max(1, min(available, -(-rows // ROWS_PER_XGB_WORKER)))


def executor_plan(rows: int, cores_per_executor: int = 4, memory_per_core_gib: int = 4) -> dict:
    """A Spark-on-Kubernetes sizing for the feature job over `rows` clicks: enough cores to run the shuffle
    partitions in ~4 waves, memory per core for the window sorts (docs/scale.md tabulates it)."""
    partitions = shuffle_partitions_for(rows)
    cores = max(cores_per_executor, min(256, -(-partitions // 4)))
    executors = -(-cores // cores_per_executor)
    return {"rows": rows, "shuffle_partitions": partitions, "executors": executors,
            "executor_cores": cores_per_executor, "executor_memory_gib": cores_per_executor * memory_per_core_gib}


def arrow_safe(frame):
    """Unsigned id columns widened to signed ones: Spark's Arrow transfer has no unsigned types and would
    silently fall back to row-by-row pickling."""
    unsigned = {c: ("int64" if frame[c].dtype.itemsize >= 4 else "int32") for c in frame.columns
                if frame[c].dtype.kind == "u"}
    return frame.astype(unsigned) if unsigned else frame
