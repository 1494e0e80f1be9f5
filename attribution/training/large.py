"""Training from a features Parquet of any size on one machine.

Nothing holds the whole file: a first pass reads only the time and label columns (split points, class
counts); the second reads the training window batch by batch and keeps positives and a seeded fraction of
negatives as it reads; the holdout is scored batch by batch. Only the down-sampled training rows are
ever a frame, and XGBoost trains from a QuantileDMatrix of them.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
from tqdm.auto import tqdm

from attribution.features.spec import FeatureSpec
from attribution.model.bundle import ModelBundle
from attribution.schema import CLICK_COLUMNS, CLICK_TIME, LABEL, TRUE_PROBABILITY, to_epoch
from attribution.training.config import TrainConfig, negative_rate_for
from attribution.training.fit import resolve_params, train_variant
from attribution.training.record import finish_training, split_record, time_range
from attribution.training.split import TimeSplit, default_valid_from
from attribution.training.tune import tune

log = logging.getLogger(__name__)


def read_columns(data: ds.Dataset, spec: FeatureSpec) -> list[str]:
    """The columns the model and its metrics read, of those the file has."""
    wanted = [*CLICK_COLUMNS, LABEL, *spec.feature_names, TRUE_PROBABILITY]
    return [c for c in wanted if c in data.schema.names]


# One batch of ~80 columns is ~0.4 GB in pandas; pyarrow's default read-ahead (16 batches) would hold
# gigabytes of a 184.9M-row file in flight, so the scans read ahead only a little.
SCAN = {"batch_size": 1 << 20, "batch_readahead": 2, "fragment_readahead": 1}


def dataset_of(path: str | Path) -> ds.Dataset:
    return ds.dataset(path, format="parquet")


def scan_time_and_labels(data: ds.Dataset) -> tuple[np.ndarray, np.ndarray]:
    table = data.to_table(columns=[CLICK_TIME, LABEL])
    return table.column(CLICK_TIME).to_numpy(), table.column(LABEL).to_numpy()


def read_sampled(
    data: ds.Dataset, spec: FeatureSpec, valid_from: int, negative_rate: float, seed: int, progress: bool
) -> pd.DataFrame:
    """Training-window rows (click_time < valid_from), all positives and `negative_rate` of negatives.
    The keep decision is a seeded hash of row_id, so it does not depend on batch boundaries."""
    parts = []
    scanner = data.scanner(columns=read_columns(data, spec), filter=ds.field(CLICK_TIME) < valid_from, **SCAN)
    with tqdm(desc="read training window", unit=" rows", unit_scale=True, disable=not progress) as bar:
        for batch in scanner.to_batches():
            frame = batch.to_pandas()
            keep = frame[LABEL].to_numpy() == 1
            if negative_rate < 1.0:
                keep |= _uniform(frame["row_id"].to_numpy(), seed) < negative_rate
            else:
                keep[:] = True
            parts.append(frame[keep])
            bar.update(len(frame))
    return pd.concat(parts, ignore_index=True)


def _uniform(ids: np.ndarray, seed: int) -> np.ndarray:
    """A deterministic U[0,1) per row id (splitmix64)."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps, as the mixer intends
        z = ids.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def score_holdout(
    data: ds.Dataset, bundle: ModelBundle, valid_from: int, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    has_tp = TRUE_PROBABILITY in data.schema.names
    ys, ps, tps = [], [], []
    scanner = data.scanner(columns=read_columns(data, bundle.spec), filter=ds.field(CLICK_TIME) >= valid_from, **SCAN)
    with tqdm(desc="score holdout", unit=" rows", unit_scale=True, disable=not progress) as bar:
        for batch in scanner.to_batches():
            frame = batch.to_pandas()
            ys.append(frame[LABEL].to_numpy())
            ps.append(bundle.predict_proba(frame))
            if has_tp:
                tps.append(frame[TRUE_PROBABILITY].to_numpy())
            bar.update(len(frame))
    return np.concatenate(ys), np.concatenate(ps), (np.concatenate(tps) if has_tp else None)


def train_large(features_path: str | Path, model_dir: str | Path, cfg: TrainConfig, progress: bool = True) -> dict:
    """Down-sampled training window read in batches, holdout scored in batches: memory stays bounded."""
    started = time.perf_counter()
    data = dataset_of(features_path)
    t_all, y_all = scan_time_and_labels(data)
    vf = to_epoch(cfg.valid_from) if cfg.valid_from is not None else default_valid_from(t_all)
    train_mask = t_all < vf
    rate = negative_rate_for(cfg, int((y_all[train_mask] == 0).sum()))
    rows = {"train": int(train_mask.sum()), "holdout": int((~train_mask).sum())}
    positives = {"train": int(y_all[train_mask].sum()), "holdout": int(y_all[~train_mask].sum())}
    ranges = {"train": time_range(t_all[train_mask]), "holdout": time_range(t_all[~train_mask])}
    del t_all, y_all, train_mask
    log.info("train (streaming): %d training rows, keeping %.4f of negatives", rows["train"], rate)

    t0 = time.perf_counter()
    frame = read_sampled(data, cfg.spec, vf, rate, cfg.seed, progress)
    log.info("read %d down-sampled training rows in %.1fs", len(frame), time.perf_counter() - t0)
    # The frame is already down-sampled: split it in time for early stopping and tuning, but do not
    # sample again; the recorded rate re-calibrates the probabilities.
    split = TimeSplit.training_only(frame[CLICK_TIME].to_numpy(), vf, cfg.tune_fraction)
    params, trials = resolve_params(cfg, partial(tune, frame, split, cfg, 1.0))
    t1 = time.perf_counter()
    union, booster, rounds = train_variant(frame, split, cfg, params, 1.0, cfg.use_window_features, cfg.use_cat2vec)
    log.info("trained %d rounds on %d rows in %.1fs", rounds, len(frame), time.perf_counter() - t1)
    rows["train_sampled"] = len(frame)
    del frame
    bundle = ModelBundle(union, booster, cfg.spec, rate)
    y_hold, p_hold, tp_hold = score_holdout(data, bundle, vf, progress)
    return finish_training(model_dir, cfg, union, booster, rate, params, rounds, split_record(vf, rows, positives, ranges),
                           y_hold, p_hold, tp_hold, trials, None, started)
