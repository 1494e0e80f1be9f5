"""Evaluation of a model directory on a click file: metrics.json + a self-contained report.html.

    evaluate(model_dir, input_path, output_dir, from_ts=None) -> dict   # the metrics.json content

Features are computed over the whole input first (so the evaluated clicks see the history before them),
then the clicks with click_time >= from_ts are scored. from_ts defaults to the model's holdout start
(metadata["valid_from"]) when the input reaches past it, else every row is scored.

metrics.json holds the headline metrics (roc_auc, pr_auc, log_loss, ece, rows, positives), the
reliability curve, per-day and per-app metrics, feature importance, the training-time ablation with
each feature family's delta over the baseline, a downsampled ROC curve and the confusion matrix at the
F1-maximising threshold (what KFP's ClassificationMetrics wants), and the Bayes gap for synthetic data.
Undefined values (e.g. ROC-AUC of a day without positives) are written as null.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from attribution.evaluation.metrics import binary_metrics
from attribution.features.build import load_training_frame
from attribution.model.bundle import ModelBundle, load_model
from attribution.model.estimators import RAW_ID_FEATURES, feature_names
from attribution.schema import LABEL, TRUE_PROBABILITY, to_epoch

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
BASELINE_VARIANT = "ids + hour (baseline)"
RELIABILITY_BINS = 10
TOP_APPS = 10
MAX_CURVE_POINTS = 200
CONFUSION_CATEGORIES = ["not_attributed", "attributed"]


# ---- small helpers -------------------------------------------------------------------------------------
def _epochs(col: pd.Series) -> np.ndarray:
    """click_time as epoch seconds, whether the frame holds integers or timestamps."""
    if pd.api.types.is_datetime64_any_dtype(col):
        ts = col.dt.tz_localize("UTC") if col.dt.tz is None else col.dt.tz_convert("UTC")
        return (ts.astype("int64") // 10**9).to_numpy()
    return col.to_numpy(dtype=np.int64)


def _ts(epoch: float) -> str:
    return str(pd.Timestamp(int(epoch), unit="s"))


def _time_range(t: np.ndarray) -> list[str]:
    return [_ts(t.min()), _ts(t.max())] if len(t) else []


def _clean(x: object) -> object:
    """JSON-safe: numpy scalars to Python, NaN/inf to None, recursively."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_clean(v) for v in x.tolist()]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _downsample(n: int, k: int = MAX_CURVE_POINTS) -> np.ndarray:
    """At most k indices into a curve of n points, first and last included."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(int))


def resolve_from(from_ts: str | int | None, metadata: dict, t: np.ndarray) -> tuple[int | None, str]:
    """The first evaluated second and where it came from ('argument', 'model valid_from', 'all rows')."""
    if from_ts is not None:
        return to_epoch(from_ts), "argument"
    vf = to_epoch(metadata.get("valid_from")) if metadata.get("valid_from") else None
    if vf is not None and len(t) and t.min() < vf <= t.max():
        return vf, "model valid_from"
    if vf is not None and len(t) and t.max() < vf:
        log.warning("the input ends (%s) before the model's holdout starts (%s): scoring clicks the model "
                    "may have trained on", _ts(t.max()), _ts(vf))
    return None, "all rows"


# ---- the metric pieces ---------------------------------------------------------------------------------
def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    phat = k / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def reliability_curve(y: np.ndarray, p: np.ndarray, bins: int = RELIABILITY_BINS) -> list[dict]:
    """Equal-count bins of the prediction (the same bins as attribution.evaluation.metrics' ECE): mean predicted
    vs observed rate, with the bin's count and a 95% Wilson interval of the observed rate."""
    order = np.argsort(p, kind="stable")
    out = []
    for i, chunk in enumerate(np.array_split(order, bins)):
        if not len(chunk):
            continue
        k, n = int(y[chunk].sum()), len(chunk)
        lo, hi = wilson_interval(k, n)
        out.append({"bin": i, "mean_predicted": float(p[chunk].mean()), "observed_rate": k / n, "count": n,
                    "positives": k, "observed_low": lo, "observed_high": hi,
                    "min_predicted": float(p[chunk].min()), "max_predicted": float(p[chunk].max())})
    return out


def grouped_metrics(frame: pd.DataFrame, y: np.ndarray, p: np.ndarray, keys: np.ndarray, name: str,
                    order: list | None = None) -> list[dict]:
    """binary_metrics per group value (in `order`, or sorted), with the group's share of rows."""
    groups = order if order is not None else sorted(pd.unique(keys).tolist())
    rows = []
    for g in groups:
        m = keys == g
        rows.append({name: g, "share": float(m.mean()), "positive_rate": float(y[m].mean()) if m.any() else None,
                     **binary_metrics(y[m], p[m])})
    return rows


def importance_table(bundle: ModelBundle) -> list[dict]:
    """Gain per feature, named: xgboost calls numpy-trained features f0, f1, ..."""
    names = bundle.metadata.get("feature_names") or feature_names(bundle.union)
    gain = bundle.booster.get_score(importance_type="gain")
    total = sum(gain.values()) or 1.0
    rows = []
    for key, value in gain.items():
        if key.startswith("f") and key[1:].isdigit() and int(key[1:]) < len(names):
            name = names[int(key[1:])]
        else:
            name = key
        rows.append({"feature": name, "family": feature_family(name, bundle), "gain": float(value),
                     "share": float(value) / total})
    return sorted(rows, key=lambda r: -r["gain"])


def feature_family(name: str, bundle: ModelBundle) -> str:
    if name in RAW_ID_FEATURES:
        return "ids"
    if name in bundle.spec.hour_names:
        return "hour"
    if name.startswith("c2v_"):
        return "cat2vec"
    return "window"


def ablation_table(metadata: dict) -> list[dict] | None:
    """The training-time ablation with deltas over the baseline variant (higher AUCs, lower log loss
    are better; `improves_*` says which way each delta goes)."""
    rows = metadata.get("ablation")
    if not rows:
        return None
    base = next((r for r in rows if r.get("variant") == BASELINE_VARIANT), rows[0])
    out = []
    for r in rows:
        row = dict(r)
        for k in ("roc_auc", "pr_auc", "log_loss", "ece"):
            if r.get(k) is not None and base.get(k) is not None:
                row[f"delta_{k}"] = float(r[k]) - float(base[k])
        out.append(row)
    return out


def roc_points(y: np.ndarray, p: np.ndarray) -> dict:
    fpr, tpr, thr = roc_curve(y, p)
    idx = _downsample(len(fpr))
    # sklearn's first threshold is +inf ("predict nothing"): 1.0 says the same within [0, 1].
    return {"fpr": fpr[idx].tolist(), "tpr": tpr[idx].tolist(), "thresholds": np.minimum(thr[idx], 1.0).tolist()}


def pr_points(y: np.ndarray, p: np.ndarray) -> dict:
    precision, recall, thr = precision_recall_curve(y, p)
    idx = _downsample(len(precision))
    thr = np.append(thr, 1.0)
    return {"precision": precision[idx].tolist(), "recall": recall[idx].tolist(), "thresholds": thr[idx].tolist()}


def best_f1_confusion(y: np.ndarray, p: np.ndarray) -> dict:
    """Confusion matrix (rows actual, columns predicted, [not_attributed, attributed]) at the threshold
    that maximises F1."""
    precision, recall, thr = precision_recall_curve(y, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)[:-1]
    i = int(np.argmax(f1))
    threshold = float(thr[i])
    pred = p >= threshold
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    tn = int((~pred & (y == 0)).sum())
    return {"threshold": threshold, "categories": CONFUSION_CATEGORIES, "matrix": [[tn, fp], [fn, tp]],
            "precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0,
            "f1": float(f1[i])}


def compute_metrics(frame: pd.DataFrame, p: np.ndarray, bundle: ModelBundle) -> dict:
    """Everything metrics.json holds about the scored rows (frame has the label; p the predictions)."""
    y = frame[LABEL].to_numpy().astype(int)
    t = _epochs(frame["click_time"])
    metrics = binary_metrics(y, p)
    metrics["positive_rate"] = float(y.mean())
    metrics["time_range"] = _time_range(t)
    metrics["reliability"] = reliability_curve(y, p)
    days = pd.to_datetime(t, unit="s").strftime("%Y-%m-%d").to_numpy()
    metrics["per_day"] = grouped_metrics(frame, y, p, days, "date")
    apps = frame["app"].to_numpy()
    counts = pd.Series(apps).value_counts(sort=False)
    top = sorted(counts.index.tolist(), key=lambda a: (-int(counts[a]), a))[:TOP_APPS]
    metrics["per_app"] = grouped_metrics(frame, y, p, apps, "app", order=top)
    metrics["feature_importance"] = importance_table(bundle)
    fam: dict[str, float] = {}
    for r in metrics["feature_importance"]:
        fam[r["family"]] = fam.get(r["family"], 0.0) + r["share"]
    metrics["importance_by_family"] = fam
    metrics["ablation"] = ablation_table(bundle.metadata)
    metrics["roc_curve"] = roc_points(y, p)
    metrics["pr_curve"] = pr_points(y, p)
    metrics["confusion_matrix"] = best_f1_confusion(y, p)
    if TRUE_PROBABILITY in frame:
        q = frame[TRUE_PROBABILITY].to_numpy(dtype=np.float64)
        bayes = binary_metrics(y, q)
        metrics["bayes_roc_auc"] = bayes["roc_auc"]
        metrics["bayes_pr_auc"] = bayes["pr_auc"]
        metrics["bayes_log_loss"] = bayes["log_loss"]
        metrics["gap_to_bayes"] = bayes["roc_auc"] - metrics["roc_auc"]
        metrics["gap_to_bayes_pr_auc"] = bayes["pr_auc"] - metrics["pr_auc"]
        metrics["bayes_roc_curve"] = roc_points(y, q)
        metrics["bayes_pr_curve"] = pr_points(y, q)
    return metrics


def model_summary(model_dir: str | Path, metadata: dict) -> dict:
    keys = ("trainer", "valid_from", "time_ranges", "rows", "positives", "rounds",
            "negative_rate", "feature_spec_hash", "git_commit", "holdout_metrics", "params")
    return {"model_dir": str(model_dir), **{k: metadata.get(k) for k in keys}}


# ---- the entry point -----------------------------------------------------------------------------------
def evaluate(model_dir: str | Path, input_path: str | Path, output_dir: str | Path, from_ts: str | int | None = None) -> dict:
    """Score the clicks of `input_path` from `from_ts` on with the model of `model_dir`; write
    metrics.json and report.html to `output_dir`; return the metrics (as written to metrics.json)."""
    bundle = load_model(model_dir)
    frame = load_training_frame(input_path)
    if LABEL not in frame:
        raise ValueError(f"{input_path}: evaluation needs the '{LABEL}' column (labelled clicks)")
    t_all = _epochs(frame["click_time"])
    start, source = resolve_from(from_ts, bundle.metadata, t_all)
    mask = np.ones(len(frame), dtype=bool) if start is None else t_all >= start
    scored = frame[mask]
    y = scored[LABEL].to_numpy().astype(int)
    if len(scored) == 0:
        raise ValueError(f"{input_path}: no clicks at or after {_ts(start)} (input covers {_time_range(t_all)})")
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError(
            f"{input_path}: the {len(y)} clicks evaluated (from {_ts(start) if start is not None else 'the start'}) "
            f"are all {'negative' if y.sum() == 0 else 'positive'}: ROC-AUC and PR-AUC are undefined; "
            "evaluate on more clicks (an earlier --from or a larger input)"
        )
    p = bundle.predict_proba(scored)
    metrics = compute_metrics(scored, p, bundle)
    vf = to_epoch(bundle.metadata["valid_from"]) if bundle.metadata.get("valid_from") else None
    metrics.update({
        "model_dir": str(model_dir),
        "input": str(input_path),
        "from_ts": _ts(start) if start is not None else None,
        "from_source": source,
        "input_rows": len(frame),
        "input_time_range": _time_range(t_all),
        # Clicks before the model's holdout start may have been in its training data.
        "rows_before_valid_from": int((_epochs(scored["click_time"]) < vf).sum()) if vf is not None else None,
        "model": model_summary(model_dir, bundle.metadata),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    })
    metrics = _clean(metrics)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, allow_nan=False))
    from attribution.evaluation.report import render_report

    (out / REPORT_FILE).write_text(render_report(metrics), encoding="utf-8")
    log.info("evaluated %d clicks (%d positives) from %s: roc_auc=%.4f pr_auc=%.4f -> %s",
             metrics["rows"], metrics["positives"], metrics["from_ts"] or "the start", metrics["roc_auc"],
             metrics["pr_auc"], out)
    return metrics
