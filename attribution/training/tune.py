"""Hyperopt TPE over the XGBoost parameters, on the inner time split of the training period.

Each trial fits on the earlier part of the training period and early-stops on the later part; the holdout
is never touched. Trials run in this process (one at a time, every thread), or in parallel on Spark
executors (SparkTrials) when the trainer is Spark: as many trials at once as the cluster has task slots,
each XGBoost fit using spark.task.cpus threads, so trials never oversubscribe the executors' cores.
TPE's random start is a third of the trials (at most its default 20): with a 20-trial budget the default
would spend every trial on random search.
"""

from __future__ import annotations

import logging
import math
from functools import partial

import numpy as np
import pandas as pd
from hyperopt import STATUS_OK, Trials, fmin, hp, space_eval, tpe
from hyperopt.pyll import scope
from sklearn.pipeline import FeatureUnion

from attribution.evaluation.metrics import binary_metrics
from attribution.features.build import load_training_frame
from attribution.model.estimators import feature_types
from attribution.schema import CLICK_TIME, LABEL, to_epoch
from attribution.training.booster import fit_early_stopped, quantile_matrices
from attribution.training.config import DEFAULT_PARAMS, TrainConfig, choose_negative_rate
from attribution.training.fit import fitted_features
from attribution.training.split import TimeSplit, cap_rows, downsample

log = logging.getLogger(__name__)

SPACE = {
    "max_depth": scope.int(hp.quniform("max_depth", 3, 10, 1)),
    # From the default (0.05) up: a slower rate needs hundreds more rounds per trial, which the capped
    # sample's budget spends better on more trials (bench/tune_cap.py: seconds per trial).
    "learning_rate": hp.loguniform("learning_rate", math.log(0.05), math.log(0.3)),
    # A leaf's hessian sum at a 0.2% base rate is ~0.002 per click: above ~20 a tuning sample of 100k
    # clicks cannot split at all (every trial with it learnt nothing, AUC 0.5, on the real sample).
    "min_child_weight": hp.loguniform("min_child_weight", math.log(0.5), math.log(20.0)),
    "subsample": hp.uniform("subsample", 0.5, 1.0),
    "colsample_bytree": hp.uniform("colsample_bytree", 0.4, 1.0),
    "reg_alpha": hp.loguniform("reg_alpha", math.log(1e-4), math.log(10.0)),
    "reg_lambda": hp.loguniform("reg_lambda", math.log(1e-2), math.log(100.0)),
    # Caps each leaf's log-odds step: XGBoost's advice for logistic loss on very unbalanced classes.
    "max_delta_step": hp.quniform("max_delta_step", 0, 10, 1),
    "max_rounds": 1500,
}
TPE_DEFAULT_STARTUP = 20
# Each trial fits on at most TUNE_FIT_ROWS rows and is scored on at most TUNE_EVAL_ROWS (every positive,
# seeded negatives), whatever the data size: tuning's cost stays flat in rows. bench/tune_cap.py measures
# how closely trials on this sample rank parameter sets as trials on 3x the rows do.
TUNE_FIT_ROWS = 150_000
TUNE_EVAL_ROWS = 150_000


def startup_trials(max_evals: int) -> int:
    """Random trials before TPE models the loss: a third of the budget, at least 1, at most TPE's 20."""
    return max(1, min(TPE_DEFAULT_STARTUP, max_evals // 3))


def spark_trials_plan(max_evals: int) -> tuple[int, int]:
    """(parallel trials, XGBoost threads per trial) for SparkTrials on the current Spark session: one trial
    per task slot, each with the slot's cores (spark.task.cpus)."""
    from attribution.platform.spark_session import get_spark

    spark = get_spark()
    task_cpus = int(spark.conf.get("spark.task.cpus", "1"))
    slots = max(1, int(spark.sparkContext.defaultParallelism) // task_cpus)
    return max(1, min(slots, max_evals)), task_cpus


def tune(
    frame: pd.DataFrame, split: TimeSplit, cfg: TrainConfig, negative_rate: float, union: FeatureUnion | None = None
) -> tuple[dict, list[dict]]:
    """Best parameters by tuning-part ROC-AUC, and every trial as a record (params, metrics, rounds)."""

    y = frame[LABEL].to_numpy()
    if union is None:
        union = fitted_features(frame[split.train], cfg, cfg.use_window_features, cfg.use_cat2vec)
    fit_rows = cap_rows(downsample(split.fit, y, negative_rate, cfg.seed), y, TUNE_FIT_ROWS, cfg.seed)
    tune_rows = cap_rows(split.tune, y, TUNE_EVAL_ROWS, cfg.seed + 2)
    X_fit, y_fit = union.transform(frame[fit_rows]), y[fit_rows]
    X_tune, y_tune = union.transform(frame[tune_rows]), y[tune_rows]
    types = feature_types(union)
    assert int(frame[CLICK_TIME].to_numpy()[fit_rows | tune_rows].max()) < split.valid_from
    log.info("tune: %d trials on %d fit rows, scored on %d rows", cfg.max_evals, len(y_fit), len(y_tune))

    if cfg.trainer == "spark":
        from hyperopt import SparkTrials

        parallelism, threads = spark_trials_plan(cfg.max_evals)
        trials = SparkTrials(parallelism=parallelism)
    else:
        threads, trials = cfg.n_threads, Trials()

    matrices: list = []  # built by the first trial in each process (SparkTrials ships the arrays, not these)

    def objective(params: dict) -> dict:
        if not matrices:
            matrices.extend(quantile_matrices(X_fit, y_fit, X_tune, y_tune, types))
        booster, rounds = fit_early_stopped(*matrices, params, cfg.seed, threads)
        p = booster.inplace_predict(X_tune, iteration_range=(0, rounds))
        m = binary_metrics(y_tune, p)
        loss = -m["roc_auc"] if not np.isnan(m["roc_auc"]) else 0.0
        return {"loss": loss, "status": STATUS_OK, "rounds": rounds, "metrics": m}

    best = fmin(
        objective, SPACE, algo=partial(tpe.suggest, n_startup_jobs=startup_trials(cfg.max_evals)),
        max_evals=cfg.max_evals, trials=trials, rstate=np.random.default_rng(cfg.seed), show_progressbar=False,
    )
    params = dict(space_eval(SPACE, best))
    records = [
        {"trial": i, "params": {k: (v[0] if v else None) for k, v in t["misc"]["vals"].items()},
         **{k: t["result"].get(k) for k in ("loss", "rounds", "metrics")}}
        for i, t in enumerate(trials.trials)
    ]
    log.info("tune: best tuning ROC-AUC %.4f with %s", -min(r["loss"] for r in records), params)
    return params, records


def tune_file(
    features_path: str, valid_from: str | None, max_evals: int, seed: int = 0, cat2vec_dir: str | None = None,
    trainer: str = "xgboost",
) -> dict:
    """The pipeline's tuning step: {"params", "trials", "max_evals"[, "negative_rate"]} for a features file,
    with the Cat2Vec vectors of the pipeline's own step; trials on SparkTrials when the trainer is Spark.
    max_evals=0 returns the defaults."""

    doc: dict = {"params": dict(DEFAULT_PARAMS), "trials": [], "max_evals": max_evals}
    if max_evals <= 0:
        return doc
    cfg = TrainConfig(trainer=trainer, valid_from=valid_from, max_evals=max_evals, seed=seed, cat2vec_dir=cat2vec_dir)
    frame = load_training_frame(features_path)
    split = TimeSplit.of(frame[CLICK_TIME].to_numpy(), to_epoch(cfg.valid_from), cfg.tune_fraction)
    negative_rate = choose_negative_rate(int((frame[LABEL].to_numpy()[split.train] == 0).sum()))
    best, trials = tune(frame, split, cfg, negative_rate)
    doc.update(params=best, trials=trials, negative_rate=negative_rate)
    return doc
