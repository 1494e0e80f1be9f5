"""Live quality from the prediction log and the attribution postbacks: one function, `live_metrics`, that the
batch command and the monitor service both call, so they agree exactly on the same inputs.

A click is labelled once its label is complete: `click_time + horizon <= as_of`. It is positive when a
postback says it was attributed within the horizon (`attributed_time - click_time <= horizon`), negative
otherwise. Clicks are put in one canonical order (by click_id; a click served twice counts once, the first
answer) before any metric, so the order of files or of arrivals changes nothing.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.stats import chi2

from attribution.evaluation.metrics import binary_metrics
from attribution.monitoring.drift import drift
from attribution.monitoring.prediction_log import MADE_ID_PREFIX, MODEL_ID, PROBABILITY, SERVED_AT
from attribution.schema import ATTRIBUTED_TIME, CLICK_ID, CLICK_TIME, ID_FIELDS, TIME_FORMAT

DEFAULT_HORIZON = 24 * 3600
HOUR = 3600
ROLLING = 24 * HOUR
CONFIDENCE = 0.95
_MADE_ID = re.compile(re.escape(MADE_ID_PREFIX) + r"[0-9a-f]{16}-[0-9]{1,19}")
_MAX_ID = 2**63 - 1


class PostbackError(ValueError):
    """A bad postback item: names the item (0-based) and the field."""

    def __init__(self, index: int | None, field: str | None, reason: str) -> None:
        self.index, self.field, self.reason = index, field, reason
        where = ", ".join(x for x in (f"item {index}" if index is not None else "", f"field '{field}'" if field else "") if x)
        super().__init__(f"{where}: {reason}" if where else reason)


def parse_horizon(text: str | int) -> int:
    """'24h', '90m', '2d', '3600s' or plain seconds -> seconds (> 0)."""
    if isinstance(text, int):
        seconds = text
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", str(text))
        if not m:
            raise ValueError(f"label horizon {text!r}: use a number with s, m, h or d (e.g. 24h)")
        seconds = int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"label horizon must be positive, got {text!r}")
    return seconds


def canonical_click_id(value: object, index: int | None = None) -> str:
    """The prediction log's form of a click_id: decimal text of a non-negative integer ("007" is 7), or a made id."""
    if type(value) is int:
        if 0 <= value <= _MAX_ID:
            return str(value)
    elif isinstance(value, str):
        if value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= _MAX_ID:
            return str(int(value))
        if _MADE_ID.fullmatch(value):
            return value
    raise PostbackError(index, CLICK_ID, f"expected a non-negative integer or a made id ({MADE_ID_PREFIX}<16 hex>-<number>), "
                        f"got {value!r:.60}")


def parse_time(value: object, index: int | None = None, name: str = ATTRIBUTED_TIME) -> int:
    if type(value) is int and 0 <= value < 2**40:
        return value
    if isinstance(value, str) and len(value) == 19:
        try:  # strptime: ~100x faster than pandas per item, and a postback batch is parsed item by item
            return calendar.timegm(datetime.strptime(value, TIME_FORMAT).timetuple())
        except ValueError:
            pass
    raise PostbackError(index, name, f"expected '{TIME_FORMAT}' (UTC) or epoch seconds, got {value!r:.60}")


def parse_postbacks(items: object, max_items: int = 100_000) -> tuple[list[str], list[int]]:
    """`[{click_id, attributed_time}, ...]` -> canonical ids and epoch seconds; PostbackError names the first
    mistake, and nothing of a request with one is taken."""
    if not isinstance(items, list):
        raise PostbackError(None, None, f"expected an array of {{click_id, attributed_time}} items, got {type(items).__name__}")
    if not items:
        raise PostbackError(None, None, "empty batch: send at least one postback")
    if len(items) > max_items:
        raise PostbackError(None, None, f"{len(items)} items exceed the limit of {max_items} per request")
    ids, times = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise PostbackError(i, None, f"expected an object {{click_id, attributed_time}}, got {type(item).__name__}")
        extra = sorted(set(item) - {CLICK_ID, ATTRIBUTED_TIME})
        if extra:
            raise PostbackError(i, str(extra[0]), "unknown field (allowed: click_id, attributed_time)")
        for f in (CLICK_ID, ATTRIBUTED_TIME):
            if f not in item:
                raise PostbackError(i, f, "missing required field")
        ids.append(canonical_click_id(item[CLICK_ID], i))
        times.append(parse_time(item[ATTRIBUTED_TIME], i))
    return ids, times


@dataclass
class Postbacks:
    """Distinct attributed clicks (the earliest attributed_time of each), with what was not kept."""

    attributed: dict[str, int] = field(default_factory=dict)
    received: int = 0
    duplicates: int = 0
    dropped_unknown: int = 0  # unknown ids given up on (the service keeps them for a bounded time)

    def add(self, ids: list[str], times: list[int]) -> int:
        """Idempotent: a click_id already held is a duplicate (its earliest time kept). Returns the new ones."""
        new = 0
        for cid, t in zip(ids, times):
            old = self.attributed.get(cid)
            if old is None:
                self.attributed[cid] = t
                new += 1
            else:
                self.duplicates += 1
                if t < old:
                    self.attributed[cid] = t
        self.received += len(ids)
        return new


def distinct_predictions(predictions: pa.Table) -> tuple[pd.DataFrame, int]:
    """One row per click_id (the first served), sorted by click_id; and how many repeats were dropped."""
    frame = predictions.to_pandas()
    frame = frame.sort_values([CLICK_ID, SERVED_AT], kind="mergesort")
    first = ~frame[CLICK_ID].duplicated(keep="first")
    return frame[first.to_numpy()].reset_index(drop=True), int((~first).sum())


def calibration(y: np.ndarray, p: np.ndarray) -> dict:
    """Predicted / observed positives, with the exact Poisson interval of the observed count."""
    predicted, observed = float(np.sum(p)), int(np.sum(y))
    lo_count = chi2.ppf((1 - CONFIDENCE) / 2, 2 * observed) / 2 if observed else 0.0
    hi_count = chi2.ppf(1 - (1 - CONFIDENCE) / 2, 2 * observed + 2) / 2
    ratio = predicted / observed if observed else None
    interval = [predicted / hi_count, predicted / lo_count if lo_count else None]
    return {"predicted": predicted, "observed": observed, "ratio": ratio, "interval": interval}


def quality(y: np.ndarray, p: np.ndarray) -> dict:
    """ROC-AUC, PR-AUC, log loss and calibration of labelled clicks (None where undefined)."""
    out = {"labelled": len(y), "positives": int(np.sum(y))}
    if len(y) == 0:
        return {**out, "roc_auc": None, "pr_auc": None, "log_loss": None, "calibration": None}
    m = binary_metrics(y, p)
    return {**out, **{k: (None if isinstance(m[k], float) and math.isnan(m[k]) else m[k]) for k in ("roc_auc", "pr_auc", "log_loss")},
            "calibration": calibration(y, p)}


def live_metrics(
    predictions: pa.Table, postbacks: Postbacks, as_of: float, horizon: int = DEFAULT_HORIZON,
    references: Mapping[str, dict] | None = None,
) -> dict:
    """Everything live_metrics.json holds; see docs/monitoring.md for the fields."""
    frame, repeated = distinct_predictions(predictions)
    ids = frame[CLICK_ID].to_numpy()
    t = frame[CLICK_TIME].to_numpy(np.int64)
    p = frame[PROBABILITY].to_numpy(np.float64)
    models = frame[MODEL_ID].to_numpy()
    attributed = pd.Series(postbacks.attributed, dtype="float64").reindex(ids).to_numpy()
    positive = ~np.isnan(attributed) & (attributed - t <= horizon)
    complete = t + horizon <= as_of
    known = set(ids.tolist())
    unknown = sum(1 for cid in postbacks.attributed if cid not in known) + postbacks.dropped_unknown
    end = int((as_of - horizon) // HOUR * HOUR)  # the last label-complete hour boundary
    y = positive.astype(np.int64)

    def section(mask: np.ndarray) -> dict:
        sel = mask & complete
        return {"clicks": int(mask.sum()), **quality(y[sel], p[sel])}

    result: dict = {
        "as_of": float(as_of), "label_horizon_seconds": int(horizon),
        **section(np.ones(len(t), bool)),
        "duplicates": postbacks.duplicates, "unknown_click_ids": int(unknown), "postbacks": postbacks.received,
        "repeated_predictions": repeated, "rolling_24h_window": [end - ROLLING, end], "models": {}, "hourly": [],
    }
    references = references or {}
    hour = t // HOUR * HOUR
    columns = {f: frame[f].to_numpy() for f in ID_FIELDS}
    columns[CLICK_TIME] = t
    for model in sorted(set(models.tolist())):
        mine = models == model
        result["models"][model] = {**section(mine), "rolling_24h": section(mine & (t >= end - ROLLING) & (t < end))}
        for h in np.unique(hour[mine]).tolist():
            sel = mine & (hour == h)
            row = {"model": model, "hour": int(h), "label_complete": bool(h + HOUR + horizon <= as_of), **section(sel)}
            ref = references.get(model)
            if ref is not None:
                row["psi"] = drift(ref, {k: v[sel] for k, v in columns.items()}, p[sel])
            result["hourly"].append(row)
    return result
