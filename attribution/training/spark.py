"""Distributed training with xgboost.spark: the same feature assembly and Cat2Vec vectors, applied on the
executors (mapInPandas), into SparkXGBClassifier. The booster it returns is an ordinary XGBoost booster,
saved in the same model directory format, so the predictor never knows which trainer made it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from pyspark.sql import DataFrame as SparkFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from sklearn.pipeline import FeatureUnion

from attribution import storage
from attribution.evaluation.evaluate import scan_columns
from attribution.features.spec import FeatureSpec
from attribution.model.bundle import ModelBundle
from attribution.model.estimators import feature_types
from attribution.platform.spark_session import arrow_safe, get_spark, xgb_workers_for
from attribution.schema import CLICK_TIME, ID_FIELDS, LABEL, ROW_ID, TRUE_PROBABILITY, to_epoch
from attribution.training.booster import EARLY_STOPPING_METRIC, xgb_params
from attribution.training.config import TrainConfig, early_stopping_rounds, negative_rate_for, refit_rounds
from attribution.training.fit import fitted_features, resolve_params
from attribution.training.record import finish_training, split_record
from attribution.training.split import HOLDOUT_QUANTILE, TimeSplit, downsample
from attribution.training.tune import tune

log = logging.getLogger(__name__)
PROBABILITY = "probability"


def model_columns(spec: FeatureSpec) -> list[str]:
    """The columns the model reads: ids, time and the spec's features."""
    return [*ID_FIELDS, CLICK_TIME, *spec.feature_names]


def assemble(sdf: SparkFrame, union: FeatureUnion, extra: tuple[str, ...] = ()) -> SparkFrame:
    """`features` (array<float>) from the fitted feature union, computed on the executors; keeps `extra`."""
    schema = T.StructType(
        [T.StructField("features", T.ArrayType(T.FloatType()), False)]
        + [sdf.schema[c] for c in extra]
    )

    def transform(batches):
        for pdf in batches:
            X = union.transform(pdf)
            out = pd.DataFrame({"features": list(X.astype(np.float32))})
            for c in extra:
                out[c] = pdf[c].to_numpy()
            yield out

    return sdf.mapInPandas(transform, schema)


def num_workers(spark, rows: int | None = None) -> int:
    """Task slots of the cluster, fewer when the training set is small (attribution.platform.spark_session.xgb_workers_for)."""

    slots = max(1, int(spark.sparkContext.defaultParallelism))
    return slots if rows is None else xgb_workers_for(rows, slots)


def spark_params(params: dict, seed: int) -> dict:
    """The single-node parameters for SparkXGBClassifier. Early stopping watches AUC, as locally: AUC does
    not move when negatives are down-sampled, so the validation rows (kept at the data's balance) and the
    down-sampled training rows are compared on the same footing."""
    p = xgb_params(params, seed)
    for name in ("nthread", "eval_metric", "objective"):  # set by xgboost.spark itself (threads per task,
        p.pop(name, None)  # binary:logistic for a two-class label)
    return {**p, "eval_metric": EARLY_STOPPING_METRIC}


def fit_spark(
    sdf: SparkFrame, params: dict, seed: int, rounds: int | None = None, valid_col: str | None = None,
    rows: int | None = None, feature_types: list[str] | None = None,
) -> tuple[xgb.Booster, int, object]:
    """Early-stopped on the rows flagged by `valid_col` when rounds is None. Returns the booster, its rounds
    and the fitted Spark model. feature_types marks categorical columns, as training.booster.fit_booster."""
    from xgboost.spark import SparkXGBClassifier

    spark = sdf.sparkSession
    kwargs = spark_params(params, seed)
    if feature_types:
        kwargs["feature_types"] = feature_types
    if rounds is None:
        kwargs.update(n_estimators=int(params.get("max_rounds", 1500)), early_stopping_rounds=early_stopping_rounds(params),
                      validation_indicator_col=valid_col)
    else:
        kwargs.update(n_estimators=int(rounds))
    clf = SparkXGBClassifier(features_col="features", label_col=LABEL, num_workers=num_workers(spark, rows), **kwargs)
    model = clf.fit(sdf)
    booster = model.get_booster()
    used = booster.best_iteration + 1 if rounds is None and booster.attr("best_iteration") is not None else (
        rounds or booster.num_boosted_rounds()
    )
    if rounds is None:
        booster = booster[: used]  # keep the early-stopped trees only, as the single-node path does
    return booster, used, model


def train_variant_spark(
    frame: pd.DataFrame, split: TimeSplit, cfg: TrainConfig, params: dict, negative_rate: float
) -> tuple[FeatureUnion, xgb.Booster, int]:
    """The Spark counterpart of training.fit.train_variant on an in-memory frame."""
    spark = get_spark()
    y = frame[LABEL].to_numpy()
    union = fitted_features(frame[split.train], cfg, cfg.use_window_features, cfg.use_cat2vec)
    cols = [c for c in model_columns(cfg.spec) if c in frame] + [LABEL]
    fit_rows = downsample(split.fit, y, negative_rate, cfg.seed)
    first = frame.loc[fit_rows | split.tune, cols].assign(is_valid=split.tune[fit_rows | split.tune])
    sdf = assemble(spark.createDataFrame(arrow_safe(first)), union, (LABEL, "is_valid"))
    t0 = time.perf_counter()
    _, rounds, _ = fit_spark(sdf, params, cfg.seed, valid_col="is_valid", feature_types=feature_types(union))
    rounds = refit_rounds(rounds, cfg.tune_fraction, params, cfg.rounds_floor)
    train_rows = downsample(split.train, y, negative_rate, cfg.seed + 1)
    full = assemble(spark.createDataFrame(arrow_safe(frame.loc[train_rows, cols])), union, (LABEL,))
    booster, _, _ = fit_spark(full, params, cfg.seed, rounds=rounds, feature_types=feature_types(union))
    log.info("spark trainer: %d rounds on %d workers in %.1fs", rounds, num_workers(spark), time.perf_counter() - t0)
    return union, booster, rounds


def holdout_scores_uri(model_dir: str | Path) -> str:
    """Where the Spark job writes its scored holdout: beside the model directory, not in it (KServe's
    storage initializer downloads everything under the model's storageUri)."""
    return str(model_dir).rstrip("/") + "-holdout-scores"


def write_scored_holdout(holdout: SparkFrame, bundle: ModelBundle, uri: str) -> dict[str, int]:
    """Each executor scores its partitions and writes them as Parquet under uri (row_id, label,
    probability, true probability), through attribution.storage (gs:// with or without Spark's GCS
    connector); the driver gets one count per partition, never the rows. A retried task rewrites its own
    part. Returns the rows and positives written."""
    from pyspark import TaskContext

    storage.makedirs(uri)
    fs, root = storage.filesystem(uri)
    for old in fs.find(root):  # a rerun into the same URI starts empty
        fs.rm_file(old)

    def score(batches):
        import pyarrow as pa
        import pyarrow.parquet as pq

        frames = [pd.DataFrame({
            ROW_ID: pdf[ROW_ID].to_numpy(dtype=np.int64) if ROW_ID in pdf else np.full(len(pdf), -1, dtype=np.int64),
            LABEL: pdf[LABEL].to_numpy(dtype=np.int64), PROBABILITY: bundle.predict_proba(pdf),
            TRUE_PROBABILITY: pdf[TRUE_PROBABILITY].to_numpy(dtype=np.float64) if TRUE_PROBABILITY in pdf else np.nan,
        }) for pdf in batches]
        part = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[ROW_ID, LABEL, PROBABILITY])
        if len(part):
            part_fs, part_root = storage.filesystem(uri)
            with part_fs.open(f"{part_root.rstrip('/')}/part-{TaskContext.get().partitionId():05d}.parquet", "wb") as f:
                pq.write_table(pa.Table.from_pandas(part, preserve_index=False), f)
        yield pd.DataFrame({"rows": [len(part)], "positives": [int(part[LABEL].sum()) if len(part) else 0]})

    counts = holdout.mapInPandas(score, "rows long, positives long").groupBy().sum().collect()[0]
    return {"rows": int(counts[0] or 0), "positives": int(counts[1] or 0)}


def train_from_parquet(features_path: str, model_dir: str | Path, cfg: TrainConfig) -> dict:
    """The cluster path: features Parquet read by Spark (any size), split by time in Spark, Cat2Vec fitted
    on a driver-side sample of the training window, everything else on the executors."""

    started = time.perf_counter()
    spark = get_spark()
    sdf = spark.read.parquet(features_path)
    if cfg.valid_from is not None:
        vf = to_epoch(cfg.valid_from)
    else:
        vf = int(sdf.approxQuantile(CLICK_TIME, [HOLDOUT_QUANTILE], 0.001)[0])
    train_sdf = sdf.filter(F.col(CLICK_TIME) < vf)
    tf = int(train_sdf.approxQuantile(CLICK_TIME, [1.0 - cfg.tune_fraction], 0.001)[0])
    counts = train_sdf.groupBy(LABEL).count().toPandas().set_index(LABEL)["count"].to_dict()
    negative_rate = negative_rate_for(cfg, int(counts.get(0, 0)))
    keep = (F.col(LABEL) == 1) | (F.rand(cfg.seed) < F.lit(negative_rate))
    cols = [c for c in model_columns(cfg.spec) if c in sdf.columns] + [LABEL]

    # A uniform (label-independent) sample of the training window on the driver: Cat2Vec's corpus when the
    # pipeline's own vectors (cfg.cat2vec_dir) are not given, and the tuning set.
    sample_rows = (cfg.cat2vec or {}).get("max_fit_rows", 1_000_000)
    n_train = int(sum(counts.values()))
    sample = train_sdf.select(*cols).sample(fraction=min(1.0, sample_rows / max(1, n_train)), seed=cfg.seed).toPandas()
    union = fitted_features(sample, cfg, cfg.use_window_features, cfg.use_cat2vec)

    def tune_fn():  # tuning on the driver sample's inner split (all of it before vf), trials on Spark
        split = TimeSplit.training_only(sample[CLICK_TIME].to_numpy(), vf, cfg.tune_fraction)
        return tune(sample, split, cfg, negative_rate, union=union)

    params, trials = resolve_params(cfg, tune_fn)
    is_tune = F.col(CLICK_TIME) >= tf
    first = train_sdf.filter(keep | is_tune).select(*cols).withColumn("is_valid", is_tune)
    expected_rows = int(counts.get(1, 0) + counts.get(0, 0) * negative_rate)
    _, rounds, _ = fit_spark(assemble(first, union, (LABEL, "is_valid")), params, cfg.seed, valid_col="is_valid",
                             rows=expected_rows, feature_types=feature_types(union))
    rounds = refit_rounds(rounds, cfg.tune_fraction, params, cfg.rounds_floor)
    booster, _, _ = fit_spark(
        assemble(train_sdf.filter(keep).select(*cols), union, (LABEL,)), params, cfg.seed, rounds=rounds,
        rows=expected_rows, feature_types=feature_types(union),
    )

    bundle = ModelBundle(union, booster, cfg.spec, negative_rate)
    keep_cols = [c for c in (ROW_ID, TRUE_PROBABILITY) if c in sdf.columns and c not in cols]
    holdout = sdf.filter(F.col(CLICK_TIME) >= vf).select(*cols, *keep_cols)
    scores_uri = holdout_scores_uri(model_dir)
    written = write_scored_holdout(holdout, bundle, scores_uri)
    scored = scan_columns(scores_uri, [LABEL, PROBABILITY, TRUE_PROBABILITY])  # 3 columns, in batches
    log.info("scored holdout: %d rows (%d positives) written by the executors to %s", written["rows"],
             written["positives"], scores_uri)
    info = split_record(vf, {"train": n_train, "holdout": written["rows"]},
                        {"train": int(counts.get(1, 0)), "holdout": written["positives"]})
    info["holdout_scores"] = scores_uri
    tp = scored[TRUE_PROBABILITY]
    true_p = tp if len(tp) and not np.isnan(tp).any() else None
    return finish_training(model_dir, cfg, union, booster, negative_rate, params, rounds, info,
                           scored[LABEL].astype(int), scored[PROBABILITY], true_p, trials, None, started)
