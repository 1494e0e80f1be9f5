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

from attribution.evaluation.metrics import binary_metrics, calibration_bins
from attribution.features.build import load_training_frame
from attribution.model.bundle import ModelBundle, load_model
from attribution.model.estimators import RAW_ID_FEATURES, feature_names
from attribution.schema import LABEL, TRUE_PROBABILITY, to_epoch

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
BASELINE_VARIANT = "ids + hour (baseline)"
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
def reliability_curve(y: np.ndarray, p: np.ndarray) -> list[dict]:
    """The log-spaced calibration bins of attribution.evaluation.metrics (the ECE's own bins)."""
    return calibration_bins(y, p)


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


# ---- reading and scoring -------------------------------------------------------------------------------
# (kept columns of the scored rows, predictions, the input's click times or just [first, last] second,
#  the first scored second, where it came from, input rows)
Scored = tuple[pd.DataFrame, np.ndarray, np.ndarray, "int | None", str, int]
# Bytes per row of one scanned batch in flight: the Arrow batch, its pandas copy, the model's matrix.
BATCH_BYTES_PER_ROW = 2_000
MAX_BATCH_ROWS = 1 << 20


def batch_rows_for(memory_budget: int | None) -> int:
    """Batches sized so that a few in flight use at most an eighth of the budget."""
    if memory_budget is None:
        return MAX_BATCH_ROWS
    return int(min(MAX_BATCH_ROWS, max(1 << 14, memory_budget // (8 * 3 * BATCH_BYTES_PER_ROW))))


def kept_columns(names: list[str] | pd.Index) -> list[str]:
    """What metrics.json needs of a scored row besides its prediction."""
    return [c for c in (LABEL, "click_time", "app", TRUE_PROBABILITY) if c in names]


def score_in_memory(bundle: ModelBundle, input_path: str | Path, from_ts: str | int | None) -> Scored:
    """A click file (features computed over the whole stream first) or a small features file, whole."""
    frame = load_training_frame(input_path)
    if LABEL not in frame:
        raise ValueError(f"{input_path}: evaluation needs the '{LABEL}' column (labelled clicks)")
    t_all = _epochs(frame["click_time"])
    start, source = resolve_from(from_ts, bundle.metadata, t_all)
    scored = frame[np.ones(len(frame), dtype=bool) if start is None else t_all >= start]
    check_scored(input_path, scored, start, t_all)
    return scored[kept_columns(scored.columns)], bundle.predict_proba(scored), t_all, start, source, len(frame)


def score_streamed(bundle: ModelBundle, input_path: str | Path, from_ts: str | int | None, batch_rows: int) -> Scored:
    """A features Parquet scanned in batches: only the label, time, app (and true probability) of the
    scored rows and their predictions are kept (~30 bytes a row), never the feature columns."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    data = ds.dataset(input_path, format="parquet")
    if LABEL not in data.schema.names:
        raise ValueError(f"{input_path}: evaluation needs the '{LABEL}' column (labelled clicks)")
    lo = hi = None
    n = 0
    for batch in data.scanner(columns=["click_time"], batch_size=batch_rows).to_batches():
        if batch.num_rows:
            mm = pc.min_max(batch.column(0))
            lo = mm["min"].as_py() if lo is None else min(lo, mm["min"].as_py())
            hi = mm["max"].as_py() if hi is None else max(hi, mm["max"].as_py())
            n += batch.num_rows
    # resolve_from and the ranges only look at the first and last second and whether there are rows
    span = np.array([lo, hi], dtype=np.int64) if n else np.array([], dtype=np.int64)
    start, source = resolve_from(from_ts, bundle.metadata, span)
    scanner = data.scanner(filter=None if start is None else ds.field("click_time") >= start,
                           batch_size=batch_rows, batch_readahead=2, fragment_readahead=1)
    kept, ps = [], []
    for batch in scanner.to_batches():
        frame = batch.to_pandas()
        ps.append(bundle.predict_proba(frame))
        kept.append(frame[kept_columns(frame.columns)])
    scored = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame({LABEL: np.zeros(0, dtype=int)})
    check_scored(input_path, scored, start, span)
    return scored, np.concatenate(ps), span, start, source, n


def scan_columns(input_path: str, columns: list[str], batch_rows: int = MAX_BATCH_ROWS) -> dict[str, np.ndarray]:
    """Some columns of a Parquet file or folder (a local path or a URI, through attribution.storage) read
    in batches: only those columns are ever in memory, never a whole row group of the others."""
    import pyarrow.dataset as ds

    from attribution.storage import filesystem

    fs, path = filesystem(input_path)
    data = ds.dataset(path, filesystem=fs, format="parquet")
    missing = [c for c in columns if c not in data.schema.names]
    if missing:
        raise ValueError(f"{input_path}: no column {', '.join(missing)} (has {', '.join(data.schema.names)})")
    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for batch in data.scanner(columns=columns, batch_size=batch_rows).to_batches():
        for c in columns:
            parts[c].append(batch.column(c).to_numpy(zero_copy_only=False))
    return {c: np.concatenate(v) if v else np.zeros(0) for c, v in parts.items()}


def check_scored(input_path: str | Path, scored: pd.DataFrame, start: int | None, t_all: np.ndarray) -> None:
    y = scored[LABEL].to_numpy().astype(int)
    if len(scored) == 0:
        raise ValueError(f"{input_path}: no clicks at or after {_ts(start)} (input covers {_time_range(t_all)})")
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError(
            f"{input_path}: the {len(y)} clicks evaluated (from {_ts(start) if start is not None else 'the start'}) "
            f"are all {'negative' if y.sum() == 0 else 'positive'}: ROC-AUC and PR-AUC are undefined; "
            "evaluate on more clicks (an earlier --from or a larger input)"
        )


def is_features_file(input_path: str | Path, bundle: ModelBundle) -> bool:
    p = Path(input_path)
    if not (p.suffix == ".parquet" or p.is_dir()):
        return False
    import pyarrow.dataset as ds

    return set(bundle.spec.feature_names) <= set(ds.dataset(p, format="parquet").schema.names)


# ---- the entry point -----------------------------------------------------------------------------------
def evaluate(
    model_dir: str | Path, input_path: str | Path, output_dir: str | Path, from_ts: str | int | None = None,
    memory_budget: int | None = None,
) -> dict:
    """Score the clicks of `input_path` from `from_ts` on with the model of `model_dir`; write
    metrics.json and report.html to `output_dir`; return the metrics (as written to metrics.json).
    A features Parquet is streamed in batches (sized by memory_budget); a click file is read whole."""
    bundle = load_model(model_dir)
    if is_features_file(input_path, bundle):
        scored, p, t_all, start, source, input_rows = score_streamed(
            bundle, input_path, from_ts, batch_rows_for(memory_budget))
    else:
        scored, p, t_all, start, source, input_rows = score_in_memory(bundle, input_path, from_ts)
    metrics = compute_metrics(scored, p, bundle)
    vf = to_epoch(bundle.metadata["valid_from"]) if bundle.metadata.get("valid_from") else None
    metrics.update({
        "model_dir": str(model_dir),
        "input": str(input_path),
        "from_ts": _ts(start) if start is not None else None,
        "from_source": source,
        "input_rows": input_rows,
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
