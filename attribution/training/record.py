"""What every trainer writes: holdout metrics and one metadata document, with the model directory."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.pipeline import FeatureUnion

from attribution.evaluation.metrics import binary_metrics
from attribution.model.bundle import TRIALS_FILE, save_model
from attribution.model.estimators import feature_names
from attribution.monitoring.drift import reference_histograms, write_reference
from attribution.monitoring.prediction_log import model_id
from attribution.storage import join, write_text
from attribution.training.config import TrainConfig


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str]:
    import gensim
    import sklearn

    return {"python": platform.python_version(), "xgboost": xgb.__version__, "sklearn": sklearn.__version__,
            "gensim": gensim.__version__, "pandas": pd.__version__, "numpy": np.__version__}


def time_range(t: np.ndarray) -> list[str]:
    return [str(pd.Timestamp(int(t.min()), unit="s")), str(pd.Timestamp(int(t.max()), unit="s"))] if len(t) else []


def split_record(
    valid_from: int, rows: dict[str, int], positives: dict[str, int], time_ranges: dict[str, list[str]] | None = None
) -> dict:
    """The split as every trainer records it: rows and positives per part ('train' and 'holdout' always;
    'fit', 'tune' or 'train_sampled' where the trainer knows them), time ranges where it has them."""
    return {"valid_from": str(pd.Timestamp(valid_from, unit="s")), "rows": rows, "positives": positives,
            "time_ranges": time_ranges or {}}


def finish_training(
    model_dir: str | os.PathLike, cfg: TrainConfig, union: FeatureUnion, booster: xgb.Booster, negative_rate: float,
    params: dict, rounds: int, split: dict, holdout_y: np.ndarray, holdout_p: np.ndarray,
    holdout_true_p: np.ndarray | None, trials: list[dict] | None, ablation: list[dict] | None, started: float,
    holdout_columns: Mapping[str, np.ndarray] | None = None,
) -> dict:
    """Metrics, metadata and the model directory: the same for every trainer. The reference histograms the
    monitor's drift reads are the holdout's (the most recent clicks the model was judged on): its scores always,
    its click fields where the trainer holds them (`holdout_columns`)."""
    metrics = binary_metrics(holdout_y, holdout_p)
    if holdout_true_p is not None:
        metrics["bayes_roc_auc"] = binary_metrics(holdout_y, holdout_true_p)["roc_auc"]
    metadata = {
        "trainer": cfg.trainer,
        "config": cfg.record(),
        "params": params,
        "rounds": rounds,
        "negative_rate": negative_rate,
        "feature_names": feature_names(union),
        **split,
        "holdout_metrics": metrics,
        "ablation": ablation,
        "feature_importance": {k: float(v) for k, v in booster.get_score(importance_type="gain").items()},
        "versions": library_versions(),
        "git_commit": git_commit(),
        "train_seconds": round(time.perf_counter() - started, 2),
    }
    save_model(model_dir, union, booster, cfg.spec, negative_rate, metadata)
    metadata["feature_spec_hash"] = cfg.spec.hash
    write_reference(model_dir, reference_histograms(holdout_columns or {}, holdout_p), model_id(model_dir))
    if trials is not None:
        write_text(join(model_dir, TRIALS_FILE), json.dumps(trials, indent=2, default=str))
    logging.getLogger(__name__).info(
        "model -> %s: holdout roc_auc=%.4f pr_auc=%.4f (%s, %d rounds, %.0fs)",
        model_dir, metrics["roc_auc"], metrics["pr_auc"], cfg.trainer, rounds, metadata["train_seconds"],
    )
    return metadata
