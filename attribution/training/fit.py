"""One model variant fitted on a time split: Cat2Vec on the training window, XGBoost early-stopped on the
tuning part, then refit on the whole training period. The local, streaming and ablation paths share it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import xgboost as xgb
from sklearn.pipeline import FeatureUnion

from attribution.features.build import load_training_frame
from attribution.model.cat2vec import Cat2Vec
from attribution.model.estimators import feature_types, make_features
from attribution.schema import CLICK_TIME, ID_FIELDS, LABEL, to_epoch
from attribution.training.booster import fit_booster
from attribution.training.config import DEFAULT_PARAMS, TrainConfig, refit_rounds
from attribution.training.split import TimeSplit, default_valid_from, downsample

log = logging.getLogger(__name__)


def fitted_features(
    train_rows: pd.DataFrame, cfg: TrainConfig, use_window_features: bool, use_cat2vec: bool
) -> FeatureUnion:
    """The feature union fitted on the training window, reusing Cat2Vec vectors fitted earlier (the
    pipeline's own step) when cfg.cat2vec_dir names them."""
    union = make_features(cfg.spec, use_window_features, use_cat2vec, cfg.seed, **cfg.cat2vec)
    if use_cat2vec and cfg.cat2vec_dir:
        union.transformer_list[-1] = ("cat2vec", Cat2Vec.load(cfg.cat2vec_dir))
        return union  # the assembler has nothing to fit
    return union.fit(train_rows)


def train_variant(
    frame: pd.DataFrame, split: TimeSplit, cfg: TrainConfig, params: dict, negative_rate: float,
    use_window_features: bool, use_cat2vec: bool,
) -> tuple[FeatureUnion, xgb.Booster, int]:
    """Fit Cat2Vec on the training window, early-stop on the tuning part, refit on all training rows."""
    y = frame[LABEL].to_numpy()
    t0 = time.perf_counter()
    union = fitted_features(frame[split.train], cfg, use_window_features, use_cat2vec)
    t1 = time.perf_counter()
    fit_rows = downsample(split.fit, y, negative_rate, cfg.seed)
    types = feature_types(union)
    _, rounds = fit_booster(
        union.transform(frame[fit_rows]), y[fit_rows], union.transform(frame[split.tune]), y[split.tune],
        params, cfg.seed, cfg.n_threads, feature_types=types,
    )
    t2 = time.perf_counter()
    rounds = refit_rounds(rounds, cfg.tune_fraction, params, cfg.rounds_floor)
    train_rows = downsample(split.train, y, negative_rate, cfg.seed + 1)
    booster, _ = fit_booster(
        union.transform(frame[train_rows]), y[train_rows], None, None, params, cfg.seed, cfg.n_threads, rounds=rounds,
        feature_types=types,
    )
    log.info(
        "fit: features %.1fs, early-stopped fit %.1fs, refit %d rounds on %d rows %.1fs",
        t1 - t0, t2 - t1, rounds, int(train_rows.sum()), time.perf_counter() - t2,
    )
    return union, booster, rounds


def resolve_params(cfg: TrainConfig, tune_fn: Callable[[], tuple[dict, list[dict]]]) -> tuple[dict, list[dict] | None]:
    """Explicit parameters, Hyperopt's best (tune_fn() -> (params, trials)), or the defaults."""
    if cfg.params:
        return {**DEFAULT_PARAMS, **cfg.params}, None
    if cfg.max_evals > 0:
        params, trials = tune_fn()
        return {**DEFAULT_PARAMS, **params}, trials
    return dict(DEFAULT_PARAMS), None


def fit_cat2vec_file(
    features_path: str | Path, output_dir: str | Path, valid_from: str | None = None, seed: int = 0,
    cat2vec: dict | None = None,
) -> dict:
    """Cat2Vec on the training window of a features file, saved as arrays (the pipeline's own step, and the
    streaming trainer's). The corpus is every training-window click (Cat2Vec takes its own seeded uniform
    sample): label-free, never the down-sampled, positive-enriched training frame. A Parquet file is read
    for its id and time columns only."""
    path = Path(features_path)
    if path.suffix == ".parquet" or path.is_dir():
        import pyarrow.dataset as ds

        frame = ds.dataset(path, format="parquet").to_table(columns=[*ID_FIELDS, CLICK_TIME]).to_pandas()
    else:
        frame = load_training_frame(path)
    t = frame[CLICK_TIME].to_numpy()
    vf = to_epoch(valid_from) if valid_from is not None else default_valid_from(t)
    train = t < vf
    if not train.any():
        raise ValueError(f"{features_path}: valid_from {valid_from} leaves no training rows for Cat2Vec")
    model = Cat2Vec(seed=seed, **(cat2vec or {})).fit(frame[train])
    model.save(output_dir)
    return {"vocabulary": len(model.vocabulary_), "training_rows": int(train.sum())}
