"""Entry point of the Spark training job (the SparkApplication's mainApplicationFile, and the KFP
component's local mode): features Parquet in, model directory out, through xgboost.spark.

    spark-submit attribution/training/spark_job.py --input FEATURES --model-dir DIR [--valid-from TS] [--max-evals N]
        [--cat2vec-dir DIR] [--params JSON]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):  # run as a file by spark-submit: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


@contextlib.contextmanager
def readable_input(spark, uri: str) -> Iterator[str]:
    """uri itself when Spark's Hadoop layer has a filesystem for its scheme (the cluster image ships the GCS
    connector); otherwise (a local master without it, e.g. against an emulator) the files staged once
    through attribution.storage into a local folder."""
    from attribution import storage

    scheme = uri.partition("://")[0] if storage.is_remote(uri) else ""
    if not scheme or hadoop_has_scheme(spark, scheme):
        yield uri
        return
    logging.getLogger(__name__).info("no Hadoop filesystem for %s:// here; staging %s locally", scheme, uri)
    with storage.local_file_for_read(uri) as local:
        yield local


def hadoop_has_scheme(spark, scheme: str) -> bool:
    jvm = spark.sparkContext._jvm
    try:
        jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(scheme, spark.sparkContext._jsc.hadoopConfiguration())
        return True
    except Exception:  # noqa: BLE001 - py4j wraps UnsupportedFileSystemException
        return False


def main(argv: list[str] | None = None) -> int:
    from attribution import storage
    from attribution.platform.spark_session import get_spark
    from attribution.training.config import TrainConfig
    from attribution.training.spark import train_from_parquet

    p = argparse.ArgumentParser(description="Train the attribution model on Spark (xgboost.spark).")
    p.add_argument("--input", required=True, help="features Parquet (file or directory; gs:// on a cluster)")
    p.add_argument("--model-dir", required=True, help="where the model directory is written")
    p.add_argument("--valid-from", default=None, help="holdout start, UTC")
    p.add_argument("--max-evals", type=int, default=0, help="Hyperopt trials (SparkTrials)")
    p.add_argument("--negative-rate", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cat2vec-dir", default=None,
                   help="the pipeline's fitted Cat2Vec vectors, a folder or gs:// (used as they are, not fitted again)")
    p.add_argument("--params", default=None,
                   help="XGBoost parameters as JSON, or a path to the tuning step's params.json (skips tuning)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = None
    if a.params:
        doc = json.loads(a.params if a.params.lstrip().startswith("{") else storage.read_text(a.params))
        params = doc.get("params", doc)  # the tuning step's document, or bare parameters
    with contextlib.ExitStack() as stack:
        # the driver loads the vectors from a local folder: a gs:// one is downloaded first
        c2v = stack.enter_context(storage.local_dir_for_read(a.cat2vec_dir)) if a.cat2vec_dir else None
        cfg = TrainConfig(trainer="spark", valid_from=a.valid_from, max_evals=a.max_evals,
                          negative_rate=a.negative_rate, seed=a.seed, params=params, cat2vec_dir=c2v)
        features = stack.enter_context(readable_input(get_spark(), a.input))
        meta = train_from_parquet(features, a.model_dir, cfg)  # the model directory goes through storage
    logging.getLogger("attribution.training.spark_job").info("holdout metrics: %s", meta["holdout_metrics"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
