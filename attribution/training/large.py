"""Training from a features Parquet of any size on one machine, and the pipeline's Cat2Vec and tuning
steps on capped samples of it.

Nothing holds the whole file: a first pass reads only the time and label columns (split points, class
counts, 9 bytes a row); the second reads the training window batch by batch and keeps positives and a
seeded fraction of negatives as it reads; the holdout is scored batch by batch. Only the down-sampled
training rows are ever a frame, and XGBoost trains from a QuantileDMatrix of them. Under a memory budget
the kept rows are capped by it (SAMPLED_BYTES_PER_ROW) and the batches shrink with it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
from tqdm.auto import tqdm

from attribution.features.spec import FeatureSpec
from attribution.model.bundle import ModelBundle
from attribution.model.cat2vec import Cat2Vec
from attribution.schema import CLICK_COLUMNS, CLICK_TIME, LABEL, ROW_ID, TRUE_PROBABILITY, to_epoch
from attribution.training.config import DEFAULT_PARAMS, TrainConfig, negative_rate_for
from attribution.training.fit import resolve_params, train_variant
from attribution.training.record import finish_training, split_record, time_range
from attribution.training.split import TimeSplit, default_valid_from
from attribution.training.tune import TUNE_EVAL_ROWS, TUNE_FIT_ROWS, tune

log = logging.getLogger(__name__)


def read_columns(data: ds.Dataset, spec: FeatureSpec) -> list[str]:
    """The columns the model and its metrics read, of those the file has."""
    wanted = [*CLICK_COLUMNS, LABEL, *spec.feature_names, TRUE_PROBABILITY]
    return [c for c in wanted if c in data.schema.names]


# One batch of ~80 columns is ~0.4 GB in pandas; pyarrow's default read-ahead (16 batches) would hold
# gigabytes of a 184.9M-row file in flight, so the scans read ahead only a little.
SCAN = {"batch_size": 1 << 20, "batch_readahead": 2, "fragment_readahead": 1}
# Peak bytes per kept (down-sampled) training row: its ~40-column frame, the fit/tune/refit matrices the
# feature union makes of it (~70 float columns each) and XGBoost's quantised copy, with a margin.
SAMPLED_BYTES_PER_ROW = 2_000
# Peak bytes per row of a scanned batch: the Arrow batch, its pandas copy and the model matrix.
BATCH_BYTES_PER_ROW = 2_000
# The tuning step reads at most this many rows (all positives + sampled negatives): enough to fill the
# trials' capped fit part (80% of the window) and an evaluation part holding every positive of its period.
TUNE_MAX_ROWS = TUNE_FIT_ROWS + TUNE_EVAL_ROWS


def scan_options(memory_budget: int | None = None) -> dict:
    """Scanner options: batches (and read-ahead) sized so that a few batches in flight use at most an
    eighth of the budget."""
    if memory_budget is None:
        return SCAN
    rows = int(min(1 << 20, max(1 << 14, memory_budget // (8 * 3 * BATCH_BYTES_PER_ROW))))
    return {**SCAN, "batch_size": rows}


def rows_within(memory_budget: int | None, cap: int | None = None) -> int | None:
    """The most sampled rows a budget holds, half of it for the sample (the rest: batches, the model)."""
    if memory_budget is None:
        return cap
    fit = max(10_000, memory_budget // 2 // SAMPLED_BYTES_PER_ROW)
    return min(fit, cap) if cap else fit


def dataset_of(path: str | Path) -> ds.Dataset:
    return ds.dataset(path, format="parquet")


def scan_time_and_labels(data: ds.Dataset) -> tuple[np.ndarray, np.ndarray]:
    table = data.to_table(columns=[CLICK_TIME, LABEL])
    return table.column(CLICK_TIME).to_numpy(), table.column(LABEL).to_numpy()


def read_sampled(
    data: ds.Dataset, spec: FeatureSpec, valid_from: int, negative_rate: float, seed: int, progress: bool,
    columns: list[str] | None = None, all_positives: bool = True, scan: dict = SCAN,
) -> pd.DataFrame:
    """Training-window rows (click_time < valid_from), all positives and `negative_rate` of negatives
    (or, all_positives=False, `negative_rate` of every row: a uniform sample). The keep decision is a
    seeded hash of row_id, so it does not depend on batch boundaries."""
    parts = []
    columns = columns or read_columns(data, spec)
    needed = [*columns, *(c for c in (ROW_ID, LABEL) if c not in columns)]
    scanner = data.scanner(columns=needed, filter=ds.field(CLICK_TIME) < valid_from, **scan)
    with tqdm(desc="read training window", unit=" rows", unit_scale=True, disable=not progress) as bar:
        for batch in scanner.to_batches():
            # The keep decision reads two columns; only kept rows become pandas (a batch of ~40 columns
            # costs far more to convert than to decode).
            keep = (batch[LABEL].to_numpy(zero_copy_only=False) == 1) if all_positives else np.zeros(batch.num_rows, dtype=bool)
            if negative_rate < 1.0:
                keep |= _uniform(batch[ROW_ID].to_numpy(zero_copy_only=False), seed) < negative_rate
            else:
                keep[:] = True
            parts.append(batch.select(columns).filter(pa.array(keep)).to_pandas())
            bar.update(batch.num_rows)
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
    data: ds.Dataset, bundle: ModelBundle, valid_from: int, progress: bool, scan: dict = SCAN
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    has_tp = TRUE_PROBABILITY in data.schema.names
    ys, ps, tps = [], [], []
    scanner = data.scanner(columns=read_columns(data, bundle.spec), filter=ds.field(CLICK_TIME) >= valid_from, **scan)
    with tqdm(desc="score holdout", unit=" rows", unit_scale=True, disable=not progress) as bar:
        for batch in scanner.to_batches():
            frame = batch.to_pandas()
            ys.append(frame[LABEL].to_numpy())
            ps.append(bundle.predict_proba(frame))
            if has_tp:
                tps.append(frame[TRUE_PROBABILITY].to_numpy())
            bar.update(len(frame))
    return np.concatenate(ys), np.concatenate(ps), (np.concatenate(tps) if has_tp else None)


@dataclass
class Window:
    """The first pass: where the holdout starts, and rows, positives and time ranges on either side."""

    valid_from: int
    rows: dict[str, int]
    positives: dict[str, int]
    ranges: dict[str, list[str]]

    @property
    def train_negatives(self) -> int:
        return self.rows["train"] - self.positives["train"]


def default_cut(features_path: str | Path) -> str:
    """Where an empty valid_from cuts the holdout (default_valid_from: an exact quantile of every click's
    time), as the text a step hands on. The pipeline's local steps compute it themselves; a Spark job would
    estimate it (approxQuantile), a few seconds off, so the train step gives Spark this one."""
    t, _ = scan_time_and_labels(dataset_of(features_path))
    if not len(t):
        raise ValueError(f"{features_path}: no clicks to cut a holdout from")
    return str(pd.Timestamp(default_valid_from(t), unit="s"))


def first_pass(data: ds.Dataset, valid_from: str | None) -> Window:
    t_all, y_all = scan_time_and_labels(data)
    vf = to_epoch(valid_from) if valid_from is not None else default_valid_from(t_all)
    train_mask = t_all < vf
    return Window(
        vf, {"train": int(train_mask.sum()), "holdout": int((~train_mask).sum())},
        {"train": int(y_all[train_mask].sum()), "holdout": int(y_all[~train_mask].sum())},
        {"train": time_range(t_all[train_mask]), "holdout": time_range(t_all[~train_mask])},
    )


def capped_rate(rate: float, window: Window, max_rows: int | None) -> float:
    """The negative rate, lowered so that positives + kept negatives stay within max_rows (every positive
    is kept: they are ~0.25% of clicks)."""
    if max_rows is None or window.train_negatives == 0:
        return rate
    room = max(max_rows - window.positives["train"], max_rows // 10)
    return min(rate, room / window.train_negatives)


def train_large(
    features_path: str | Path, model_dir: str | Path, cfg: TrainConfig, progress: bool = True,
    memory_budget: int | None = None,
) -> dict:
    """Down-sampled training window read in batches, holdout scored in batches: memory stays bounded (by
    memory_budget, when given: it caps the kept rows and sizes the batches)."""
    started = time.perf_counter()
    data = dataset_of(features_path)
    window = first_pass(data, cfg.valid_from)
    vf, rows, positives, ranges = window.valid_from, dict(window.rows), window.positives, window.ranges
    rate = capped_rate(negative_rate_for(cfg, window.train_negatives), window, rows_within(memory_budget))
    log.info("train (streaming): %d training rows, keeping %.4f of negatives", rows["train"], rate)

    t0 = time.perf_counter()
    scan = scan_options(memory_budget)
    frame = read_sampled(data, cfg.spec, vf, rate, cfg.seed, progress, scan=scan)
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
    y_hold, p_hold, tp_hold = score_holdout(data, bundle, vf, progress, scan)
    return finish_training(model_dir, cfg, union, booster, rate, params, rounds, split_record(vf, rows, positives, ranges),
                           y_hold, p_hold, tp_hold, trials, None, started)


def fit_cat2vec_sampled(
    features_path: str | Path, output_dir: str | Path, valid_from: str | None = None, seed: int = 0,
    memory_budget: int | None = None,
) -> dict:
    """The pipeline's Cat2Vec step on a file too large to load: Cat2Vec fits on a uniform sample of at
    most max_fit_rows training-window clicks anyway (300k: co-occurrences settle long before), so only
    the id columns of about that many rows are kept while the window is streamed."""
    cfg = TrainConfig(seed=seed)
    model = Cat2Vec(seed=seed, **cfg.cat2vec)
    data = dataset_of(features_path)
    window = first_pass(data, valid_from)
    cap = rows_within(memory_budget, model.max_fit_rows) or window.rows["train"]
    fraction = min(1.0, 1.1 * cap / max(window.rows["train"], 1))  # a little over: Cat2Vec trims to its cap
    frame = read_sampled(data, cfg.spec, window.valid_from, fraction, seed, progress=False,
                         columns=list(model.fields), all_positives=False, scan=scan_options(memory_budget))
    model.max_fit_rows = min(cap, model.max_fit_rows or cap)
    model.fit(frame)
    model.save(output_dir)
    return {"vocabulary": len(model.vocabulary_), "training_rows": window.rows["train"], "sampled_rows": len(frame)}


def tune_sampled(
    features_path: str | Path, valid_from: str | None, max_evals: int, seed: int = 0, cat2vec_dir: str | None = None,
    memory_budget: int | None = None, trainer: str = "xgboost",
) -> dict:
    """The pipeline's tuning step on a file too large to load: Hyperopt on all training-window positives
    and seeded negatives, at most TUNE_MAX_ROWS (or what the budget holds) rows; the same document as
    training.tune.tune_file, with the sampled row count."""
    doc: dict = {"params": dict(DEFAULT_PARAMS), "trials": [], "max_evals": max_evals}
    if max_evals <= 0:
        return doc
    cfg = TrainConfig(trainer=trainer, valid_from=valid_from, max_evals=max_evals, seed=seed, cat2vec_dir=cat2vec_dir)
    data = dataset_of(features_path)
    window = first_pass(data, valid_from)
    rate = capped_rate(negative_rate_for(cfg, window.train_negatives), window, rows_within(memory_budget, TUNE_MAX_ROWS))
    frame = read_sampled(data, cfg.spec, window.valid_from, rate, seed, progress=False, scan=scan_options(memory_budget))
    split = TimeSplit.training_only(frame[CLICK_TIME].to_numpy(), window.valid_from, cfg.tune_fraction)
    best, trials = tune(frame, split, cfg, 1.0)
    doc.update(params=best, trials=trials, negative_rate=rate, sampled_rows=len(frame))
    return doc
