"""What a training run is asked to do (TrainConfig) and the defaults every trainer shares."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from attribution.features.spec import DEFAULT_SPEC, FeatureSpec

DEFAULT_PARAMS: dict[str, float | int] = {
    "max_depth": 6,
    "learning_rate": 0.05,
    "min_child_weight": 4.0,
    "subsample": 0.8,
    "colsample_bytree": 0.7,
    "reg_alpha": 0.0,
    "reg_lambda": 1.0,
    # A leaf's log-odds step capped at 3 (0 = no cap; Hyperopt searches 0..10): XGBoost's advice for logistic
    # loss at a 0.2% base rate. bench/bayes_gap.py at 1M rows: PR-AUC 0.330 vs 0.320 uncapped (80% of Bayes
    # vs 78%); a cap of 1 reached 0.337 but lost to the raw-id baseline at a real-sample cut-off.
    "max_delta_step": 3.0,
    # At most 16 ids on one side of a categorical split (XGBoost's default 64): bench/bayes_gap.py at 1M rows,
    # ROC-AUC 0.9674 vs 0.9661, PR-AUC 0.320 vs 0.318; on the real sample both beat the raw-id baseline.
    "max_cat_threshold": 16,
    "max_rounds": 1500,
}
EARLY_STOPPING_ROUNDS = 60  # at the default learning rate; see early_stopping_rounds
# The refit never gets fewer than ROUNDS_FLOOR / learning_rate rounds (200 at the default 0.05): a tuning
# part holding a few dozen positives can stop early on noise (bench/rolling_origin.py measures it).
ROUNDS_FLOOR = 10.0
# The boosted fits (early-stopped, then refit, ~500 rounds in all) cost rows x rounds, a fixed cost once
# negatives are capped: at 3M kept negatives it was ~30 min of a 2-core machine under load, half the
# full-size pipeline's hour. Every positive is kept (~0.25% of clicks), so 1M negatives are still 3:1 to
# 50:1 against them from 184.9M down to 10M clicks; the probabilities are re-calibrated by the kept rate.
MAX_TRAIN_NEGATIVES = 1_000_000
ABLATION_MAX_ROWS = 3_000_000  # the ablation trains four more models: only on small training sets


@dataclass
class TrainConfig:
    trainer: str = "xgboost"  # or "spark"
    valid_from: str | None = None  # holdout start (UTC); default: the last quarter of the time range
    max_evals: int = 0  # Hyperopt trials; 0 = DEFAULT_PARAMS
    negative_rate: float | None = None  # kept fraction of negatives; None = chosen from the data size
    use_cat2vec: bool = True
    use_window_features: bool = True
    seed: int = 0
    tune_fraction: float = 0.2  # the last part of the training period, for early stopping and tuning
    ablation: bool | None = None  # None = only when the training set is small (< ABLATION_MAX_ROWS)
    params: dict | None = None  # explicit parameters (skip tuning)
    cat2vec: dict = field(default_factory=dict)
    cat2vec_dir: str | None = None  # use these fitted vectors instead of fitting Cat2Vec again
    n_threads: int | None = None
    rounds_floor: float = ROUNDS_FLOOR  # refit rounds >= rounds_floor / learning_rate; 0 = early stopping alone
    spec: FeatureSpec = DEFAULT_SPEC  # the features the model reads: hashed into the model directory

    def record(self) -> dict:
        """The configuration as metadata (the spec by its hash: the directory holds the spec itself)."""
        doc = {k: v for k, v in asdict(self).items() if k != "spec"}
        return {**doc, "spec_hash": self.spec.hash}

    def wants_ablation(self, training_rows: int) -> bool:
        return bool(self.ablation) or (self.ablation is None and training_rows < ABLATION_MAX_ROWS)


def choose_negative_rate(n_negatives: int) -> float:
    """Keep every negative up to MAX_TRAIN_NEGATIVES; beyond, down-sample so that training stays bounded."""
    return 1.0 if n_negatives <= MAX_TRAIN_NEGATIVES else MAX_TRAIN_NEGATIVES / n_negatives


def negative_rate_for(cfg: TrainConfig, n_negatives: int) -> float:
    return cfg.negative_rate if cfg.negative_rate is not None else choose_negative_rate(n_negatives)


def early_stopping_rounds(params: dict) -> int:
    """Rounds without improvement before a fit stops: EARLY_STOPPING_ROUNDS at the default learning rate,
    fewer at a faster one (the rounds a fit needs scale as 1 / learning_rate, so the patience does too;
    a trial at 0.3 no longer runs 60 rounds past its best), never under 20."""
    scale = float(DEFAULT_PARAMS["learning_rate"]) / float(params["learning_rate"])
    return max(20, min(EARLY_STOPPING_ROUNDS, math.ceil(EARLY_STOPPING_ROUNDS * scale)))


def refit_rounds(early_stopped_rounds: int, tune_fraction: float, params: dict | None = None, floor: float = 0.0) -> int:
    """Rounds for the refit on the whole training period: grown for the extra data the tuning part adds,
    and at least floor / learning_rate."""
    grown = max(1, round(early_stopped_rounds / (1.0 - tune_fraction)))
    if floor <= 0 or params is None:
        return grown
    return max(grown, math.ceil(floor / float(params["learning_rate"])))
