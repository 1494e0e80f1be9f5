"""`attribution monitor --predictions URI --attributions FILE --output DIR`: live_metrics.json and report.html."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import pandas as pd

from attribution.monitoring.drift import read_reference
from attribution.monitoring.live import (
    DEFAULT_HORIZON,
    PostbackError,
    Postbacks,
    canonical_click_id,
    live_metrics,
    parse_time,
)
from attribution.monitoring.prediction_log import read_predictions
from attribution.schema import ATTRIBUTED_TIME, CLICK_ID

log = logging.getLogger(__name__)
LIVE_METRICS_FILE = "live_metrics.json"
LIVE_REPORT_FILE = "live_report.html"


def read_attributions(path: str | Path) -> Postbacks:
    """Postbacks from CSV (optionally gzipped), JSON lines or Parquet with click_id and attributed_time; rows
    without an attributed_time are clicks without an install and are skipped. Errors name the row (1-based)."""
    p = str(path)
    if p.endswith(".parquet"):
        frame = pd.read_parquet(p)
    elif p.endswith((".jsonl", ".json")):
        frame = pd.read_json(p, lines=p.endswith(".jsonl"), dtype=False)
    else:
        frame = pd.read_csv(p, dtype=str, keep_default_na=False)
    missing = [c for c in (CLICK_ID, ATTRIBUTED_TIME) if c not in frame.columns]
    if missing:
        raise ValueError(f"{p}: missing column(s) {missing} (need click_id and attributed_time)")
    postbacks = Postbacks()
    ids, times = [], []
    for row, (cid, at) in enumerate(zip(frame[CLICK_ID].tolist(), frame[ATTRIBUTED_TIME].tolist()), start=1):
        if at is None or at == "" or (isinstance(at, float) and math.isnan(at)):
            continue
        try:
            ids.append(canonical_click_id(cid.strip() if isinstance(cid, str) else _int(cid)))
            times.append(parse_time(at.strip() if isinstance(at, str) else _int(at)))
        except PostbackError as err:
            raise ValueError(f"{p}: row {row}, field '{err.field}': {err.reason}") from None
    postbacks.add(ids, times)
    return postbacks


def _int(v: object) -> object:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def monitor_batch(
    predictions: str, attributions: str, output: str | Path, horizon: int = DEFAULT_HORIZON,
    as_of: float | None = None, references: list[str] | None = None,
) -> dict:
    """Join a prediction log with postbacks and write DIR/live_metrics.json and DIR/live_report.html."""
    from attribution.monitoring.report import render_live_report

    refs = {r["model_id"]: r for r in map(read_reference, references or [])}
    metrics = live_metrics(read_predictions(predictions), read_attributions(attributions),
                           time.time() if as_of is None else as_of, horizon, refs)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / LIVE_METRICS_FILE).write_text(json.dumps(metrics, indent=1))
    (out / LIVE_REPORT_FILE).write_text(render_live_report(metrics))
    log.info("live: %d clicks, %d labelled, %d positives, roc_auc=%s -> %s", metrics["clicks"], metrics["labelled"],
             metrics["positives"], metrics["roc_auc"], out / LIVE_METRICS_FILE)
    return metrics
