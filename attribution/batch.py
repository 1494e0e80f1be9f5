"""Batch scoring: every click of a file scored with a model directory, features over the whole file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from attribution.features.compute import compute_features
from attribution.io import read_clicks
from attribution.model.bundle import load_model
from attribution.schema import CLICK_ID, ROW_ID


def predict_file(model_dir: str | Path, input_path: str | Path, output_path: str | Path) -> int:
    """Write row_id[, click_id], probability as Parquet; returns the number of rows scored."""
    bundle = load_model(model_dir)
    frame = compute_features(read_clicks(input_path), spec=bundle.spec)
    out = pd.DataFrame({ROW_ID: frame[ROW_ID].to_numpy()})
    if CLICK_ID in frame:
        out[CLICK_ID] = frame[CLICK_ID].to_numpy()
    out["probability"] = bundle.predict_proba(frame)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(output_path, index=False)
    return len(out)
