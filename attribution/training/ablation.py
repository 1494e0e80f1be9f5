"""What each feature family buys: holdout metrics with window features and Cat2Vec on and off."""

from __future__ import annotations

import pandas as pd

from attribution.evaluation.metrics import binary_metrics
from attribution.model.bundle import ModelBundle
from attribution.schema import LABEL
from attribution.training.config import TrainConfig
from attribution.training.fit import train_variant
from attribution.training.split import TimeSplit

ABLATIONS = {
    "ids + hour (baseline)": (False, False),
    "+ window features": (True, False),
    "+ cat2vec": (False, True),
    "full (window + cat2vec)": (True, True),
}


def run_ablation(frame: pd.DataFrame, split: TimeSplit, cfg: TrainConfig, params: dict, negative_rate: float) -> list[dict]:
    """Holdout metrics of each variant, same parameters."""
    rows = []
    holdout = frame[split.holdout]
    for name, (window, c2v) in ABLATIONS.items():
        union, booster, rounds = train_variant(frame, split, cfg, params, negative_rate, window, c2v)
        p = ModelBundle(union, booster, cfg.spec, negative_rate).predict_proba(holdout)
        rows.append({"variant": name, "window_features": window, "cat2vec": c2v, "rounds": rounds,
                     **binary_metrics(holdout[LABEL].to_numpy(), p)})
    return rows
