"""Drift before labels: reference histograms written beside a model at training time, and the population
stability index (PSI) of live clicks against them.

Categorical fields (app, device, os, channel) keep the reference's most frequent values as bins plus one
"other" bin; the score keeps equal-count bins of the reference scores. ip is left out: new ips arrive every
hour, so its PSI would be high without anything having changed. So is the hour of day: drift is computed per
hour, and one hour's clicks all have the same hour of day (its PSI would always be large).

    PSI = sum_b (live_b - ref_b) * ln(live_b / ref_b)      (fractions floored at 1e-4)

Rule of thumb the alerts use: < 0.1 stable, 0.1-0.2 moderate, > 0.2 shifted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

REFERENCE_FILE = "reference_histograms.json"
DRIFT_FIELDS = ("app", "device", "os", "channel")
SCORE = "score"
TOP_VALUES = 30
SCORE_BINS = 10
FLOOR = 1e-4


def categorical_histogram(values: np.ndarray, top: int = TOP_VALUES) -> dict:
    uniq, counts = np.unique(np.asarray(values, np.int64), return_counts=True)
    keep = np.sort(uniq[np.argsort(-counts, kind="stable")[:top]])
    return {"kind": "categorical", "values": keep.tolist(), "fractions": _fractions(_categorical_counts(values, keep))}


def score_histogram(scores: np.ndarray, bins: int = SCORE_BINS) -> dict:
    if len(scores) == 0:
        return {"kind": "numeric", "edges": [], "fractions": [0.0]}
    inner = np.unique(np.quantile(np.asarray(scores, np.float64), np.linspace(0, 1, bins + 1)[1:-1]))
    return {"kind": "numeric", "edges": inner.tolist(), "fractions": _fractions(_numeric_counts(scores, inner))}


def _categorical_counts(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.int64)
    pos = np.searchsorted(keep, values)
    hit = (pos < len(keep)) & (keep[np.minimum(pos, len(keep) - 1)] == values) if len(keep) else np.zeros(len(values), bool)
    return np.bincount(np.where(hit, pos, len(keep)), minlength=len(keep) + 1)  # the last bin: other values


def _numeric_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, np.asarray(values, np.float64), side="right"), minlength=len(edges) + 1)


def _fractions(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * len(counts)


def reference_histograms(columns: Mapping[str, np.ndarray], scores: np.ndarray) -> dict:
    """The reference of a model from (a sample of) its training or holdout clicks and their scores."""
    hists = {f: categorical_histogram(columns[f]) for f in DRIFT_FIELDS if f in columns}
    hists[SCORE] = score_histogram(scores)
    return {"rows": len(scores), "histograms": hists}


def write_reference(model_dir: str | Path, reference: dict, model: str) -> str:
    from attribution import storage

    return storage.write_text(storage.join(model_dir, REFERENCE_FILE), json.dumps({"model_id": model, **reference}, indent=1))


def read_reference(path: str | Path) -> dict:
    """A reference file, or the one in a model directory; a local path or gs://."""
    text = str(path)
    if "://" in text:
        from attribution.monitoring.prediction_log import filesystem

        uri = text if text.endswith(".json") else text.rstrip("/") + "/" + REFERENCE_FILE
        fs, where = filesystem(uri)
        with fs.open_input_stream(where) as f:
            ref, p = json.loads(f.read()), uri
    else:
        p = Path(path)
        p = p / REFERENCE_FILE if p.is_dir() else p
        ref = json.loads(p.read_text())
    if "model_id" not in ref or "histograms" not in ref:
        raise ValueError(f"{p} is not a reference histogram file (needs model_id and histograms)")
    return ref


def psi(live_fractions: np.ndarray, ref_fractions: np.ndarray) -> float:
    a = np.maximum(np.asarray(live_fractions, np.float64), FLOOR)
    e = np.maximum(np.asarray(ref_fractions, np.float64), FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def live_counts(hist: dict, values: np.ndarray) -> np.ndarray:
    if hist["kind"] == "categorical":
        return _categorical_counts(values, np.asarray(hist["values"], np.int64))
    return _numeric_counts(values, np.asarray(hist["edges"], np.float64))


def drift(reference: dict, columns: Mapping[str, np.ndarray], scores: np.ndarray) -> dict[str, float]:
    """PSI of each reference histogram for these live clicks (the score's under 'score')."""
    out: dict[str, float] = {}
    if len(scores) == 0:
        return out
    for name, hist in reference["histograms"].items():
        if name != SCORE and name not in columns:  # a field this monitor does not compare (an older reference)
            continue
        values = scores if name == SCORE else columns[name]
        counts = live_counts(hist, values)
        out[name] = psi(counts / counts.sum(), np.asarray(hist["fractions"]))
    return out
