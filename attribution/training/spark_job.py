"""Entry point of the Spark training job (the SparkApplication's mainApplicationFile, and the KFP
component's local mode): features Parquet in, model directory out, through xgboost.spark.

    spark-submit attribution/training/spark_job.py --input FEATURES --model-dir DIR [--valid-from TS] [--max-evals N]
        [--cat2vec-dir DIR] [--params JSON]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by spark-submit: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str] | None = None) -> int:
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
                   help="the pipeline's fitted Cat2Vec vectors (used as they are, not fitted again)")
    p.add_argument("--params", default=None,
                   help="XGBoost parameters as JSON, or a path to the tuning step's params.json (skips tuning)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = None
    if a.params:
        import json

        text = Path(a.params).read_text() if Path(a.params).is_file() else a.params
        doc = json.loads(text)
        params = doc.get("params", doc)  # the tuning step's document, or bare parameters
    cfg = TrainConfig(trainer="spark", valid_from=a.valid_from, max_evals=a.max_evals,
                      negative_rate=a.negative_rate, seed=a.seed, params=params,
                      cat2vec_dir=a.cat2vec_dir)
    meta = train_from_parquet(a.input, a.model_dir, cfg)
    logging.getLogger("attribution.training.spark_job").info("holdout metrics: %s", meta["holdout_metrics"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
