"""The time split every trainer uses: train (before valid_from) = fit (earlier) + tune (later); holdout
after. No holdout row reaches fitting or tuning."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

HOLDOUT_QUANTILE = 0.75  # default valid_from: the last quarter of the time range is the holdout


def default_valid_from(t: np.ndarray) -> int:
    return int(np.quantile(t, HOLDOUT_QUANTILE))


@dataclass
class TimeSplit:
    """Row masks over one frame."""

    valid_from: int
    tune_from: int
    train: np.ndarray
    fit: np.ndarray
    tune: np.ndarray
    holdout: np.ndarray

    @classmethod
    def of(cls, t: np.ndarray, valid_from: int | None, tune_fraction: float) -> TimeSplit:
        vf = valid_from if valid_from is not None else default_valid_from(t)
        train = t < vf
        if not train.any() or train.all():
            raise ValueError(f"valid_from {pd.Timestamp(vf, unit='s')} leaves no training or no holdout rows")
        return cls._within(t, train, vf, tune_fraction)

    @classmethod
    def training_only(cls, t: np.ndarray, valid_from: int, tune_fraction: float) -> TimeSplit:
        """The split of a frame that holds training rows only (the streaming trainer scores its holdout
        from the file): every row must be before valid_from."""
        train = t < valid_from
        if not train.all():
            raise ValueError("training_only: the frame holds rows at or after valid_from")
        if not train.any():
            raise ValueError(f"valid_from {pd.Timestamp(valid_from, unit='s')} leaves no training rows")
        return cls._within(t, train, valid_from, tune_fraction)

    @classmethod
    def _within(cls, t: np.ndarray, train: np.ndarray, vf: int, tune_fraction: float) -> TimeSplit:
        tf = int(np.quantile(t[train], 1.0 - tune_fraction))
        fit, tune = train & (t < tf), train & (t >= tf)
        # The contract: no holdout row reaches fitting or tuning.
        assert not (fit & ~train).any() and not (tune & ~train).any() and int(t[fit | tune].max()) < vf
        return cls(vf, tf, train, fit, tune, ~train)


def downsample(mask: np.ndarray, y: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """`mask` with negatives kept at `rate` (seeded); every positive kept."""
    if rate >= 1.0:
        return mask
    keep = (y == 1) | (np.random.default_rng(seed).random(len(y)) < rate)
    return mask & keep


def cap_rows(mask: np.ndarray, y: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """`mask` with at most ~max_rows rows, seeded: every positive while they are under half of max_rows, and
    negatives at one rate for the rest. ROC-AUC does not depend on the classes' shares, so a capped part
    ranks models as the whole part does (with more noise)."""
    n = int(mask.sum())
    if n <= max_rows:
        return mask
    positive = y == 1
    positives = int((mask & positive).sum())
    kept_positives = min(positives, max_rows // 2)
    # Its own stream: a mask from downsample(seed) holds only rows whose draw there was under its rate.
    u = np.random.default_rng([seed, 0xCA9]).random(len(y))
    keep_positive = positive & (u < kept_positives / max(1, positives))
    keep_negative = ~positive & (u < (max_rows - kept_positives) / max(1, n - positives))
    return mask & (keep_positive | keep_negative)
