"""Binary-classification metrics shared by training, evaluation, tuning and the deploy gate.

Calibration is read on log-spaced probability bins: at a 0.2% base rate equal-count bins put nine of ten
bins near p=1e-4 and say nothing about the clicks the model calls likely. Each bin carries a 95% Wilson
interval of its observed rate, and the ECE is taken over the same bins.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

EPS = 1e-15
# Bin edges: two per decade from 1e-6 to 1 (a bin [0, 1e-6) below); empty bins are left out.
CALIBRATION_EDGES = np.concatenate([[0.0], 10.0 ** np.arange(-6.0, 0.01, 0.5)])


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of a rate k/n that stays inside [0, 1] and is honest for k = 0 (rare events)."""
    if n == 0:
        return float("nan"), float("nan")
    phat = k / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def calibration_bins(y: np.ndarray, p: np.ndarray, edges: np.ndarray = CALIBRATION_EDGES) -> list[dict]:
    """Per non-empty log-spaced bin of the prediction: count, positives, mean predicted, observed rate and
    its 95% Wilson interval, the bin's edges and the predictions' range."""
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    out = []
    for b in np.unique(idx).tolist():
        m = idx == b
        k, n = int(y[m].sum()), int(m.sum())
        lo, hi = wilson_interval(k, n)
        out.append({"bin": b, "lower_edge": float(edges[b]), "upper_edge": float(edges[b + 1]),
                    "mean_predicted": float(p[m].mean()), "observed_rate": k / n, "count": n, "positives": k,
                    "observed_low": lo, "observed_high": hi,
                    "min_predicted": float(p[m].min()), "max_predicted": float(p[m].max())})
    return out


def expected_calibration_error(y: np.ndarray, p: np.ndarray) -> float:
    """Row-weighted |mean predicted - observed rate| over the log-spaced calibration bins."""
    if len(y) == 0:
        return float("nan")
    return sum(b["count"] * abs(b["mean_predicted"] - b["observed_rate"]) for b in calibration_bins(y, p)) / len(y)


def mean_interval(values: list[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval of a few repeated measurements (NaN interval with fewer than two)."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean()) if len(v) else float("nan")
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def effect_of(low: float, high: float, higher_is_better: bool = True) -> str:
    """"helps", "hurts" or "no measurable effect" (the interval covers 0, or there is none)."""
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0.0 <= high:
        return "no measurable effect"
    return "helps" if (low > 0) == higher_is_better else "hurts"


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    both = 0 < y.sum() < len(y)
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else float("nan"),
        "ece": expected_calibration_error(y, p),
        "rows": len(y),
        "positives": int(y.sum()),
        "mean_prediction": float(p.mean()) if len(p) else float("nan"),
    }
