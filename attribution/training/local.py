"""Training on one machine from a frame that fits in memory: features, split, tuning, fit, ablation."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from attribution.features.build import load_training_frame
from attribution.model.bundle import ModelBundle
from attribution.schema import CLICK_TIME, ID_FIELDS, LABEL, TRUE_PROBABILITY, to_epoch
from attribution.training.ablation import run_ablation
from attribution.training.config import TrainConfig, negative_rate_for
from attribution.training.fit import resolve_params, train_variant
from attribution.training.record import finish_training, split_record, time_range
from attribution.training.split import TimeSplit
from attribution.training.tune import tune

log = logging.getLogger(__name__)


def train_in_memory(input_path: str | Path, model_dir: str | Path, cfg: TrainConfig) -> dict:
    """Train on clicks before cfg.valid_from (XGBoost here, or xgboost.spark on the same frame) and write
    the model directory; returns its metadata."""
    started = time.perf_counter()
    frame = load_training_frame(input_path, spec=cfg.spec)
    if LABEL not in frame:
        raise ValueError(f"{input_path}: training needs the '{LABEL}' column")
    t = frame[CLICK_TIME].to_numpy()
    split = TimeSplit.of(t, to_epoch(cfg.valid_from), cfg.tune_fraction)
    y = frame[LABEL].to_numpy()
    negative_rate = negative_rate_for(cfg, int((y[split.train] == 0).sum()))
    log.info(
        "train: %d rows (%d positives) before %s, holdout %d rows; negative rate %.4f",
        int(split.train.sum()), int(y[split.train].sum()), pd.Timestamp(split.valid_from, unit="s"),
        int(split.holdout.sum()), negative_rate,
    )
    params, trials = resolve_params(cfg, lambda: tune(frame, split, cfg, negative_rate))
    if cfg.trainer == "spark":
        from attribution.training.spark import train_variant_spark

        union, booster, rounds = train_variant_spark(frame, split, cfg, params, negative_rate)
    else:
        union, booster, rounds = train_variant(
            frame, split, cfg, params, negative_rate, cfg.use_window_features, cfg.use_cat2vec
        )
    holdout = frame[split.holdout]
    p_hold = ModelBundle(union, booster, cfg.spec, negative_rate).predict_proba(holdout)
    ablation = run_ablation(frame, split, cfg, params, negative_rate) if cfg.wants_ablation(int(split.train.sum())) else None
    true_p = holdout[TRUE_PROBABILITY].to_numpy() if TRUE_PROBABILITY in holdout else None
    record = split_record(
        split.valid_from,
        {"train": int(split.train.sum()), "fit": int(split.fit.sum()), "tune": int(split.tune.sum()),
         "holdout": int(split.holdout.sum())},
        {"train": int(y[split.train].sum()), "holdout": int(y[split.holdout].sum())},
        {"train": time_range(t[split.train]), "tune": time_range(t[split.tune]), "holdout": time_range(t[split.holdout])},
    )
    return finish_training(
        model_dir, cfg, union, booster, negative_rate, params, rounds, record,
        holdout[LABEL].to_numpy(), p_hold, true_p, trials, ablation, started,
        holdout_columns={c: holdout[c].to_numpy() for c in (*ID_FIELDS, CLICK_TIME)},
    )
