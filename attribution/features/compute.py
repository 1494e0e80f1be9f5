"""Window features: one definition (spec.py), several engines that compute it identically.

    compute_features(clicks)   # row_id, the click columns, one column per feature (DEFAULT_ENGINE)
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from attribution.features.spec import DEFAULT_SPEC, FeatureSpec
from attribution.schema import CLICK_COLUMNS

Engine = Literal["duckdb", "vectorized", "spark", "online"]
ENGINES: tuple[str, ...] = ("duckdb", "vectorized", "spark", "online")
# The fastest engine that meets the parity contract: the default of every command and pipeline on files.
DEFAULT_ENGINE: Engine = "vectorized"


def passthrough_columns(clicks: pd.DataFrame) -> tuple[str, ...]:
    """Input columns carried to the output unchanged (labels, click_id, true_probability)."""
    return tuple(c for c in clicks.columns if c not in CLICK_COLUMNS)


def conform_output(out: pd.DataFrame, clicks: pd.DataFrame, spec: FeatureSpec = DEFAULT_SPEC) -> pd.DataFrame:
    """One column order and dtype per feature for every engine, rows in row_id order, and the
    input columns taken from the input itself (engines only need to return row_id + features)."""
    if len(out) != len(clicks):
        raise RuntimeError(f"engine returned {len(out)} rows for {len(clicks)} clicks")
    out_ids = out["row_id"].to_numpy()
    order = None if np.all(out_ids[1:] > out_ids[:-1]) else np.argsort(out_ids, kind="stable")
    base = clicks if np.all(np.diff(clicks["row_id"].to_numpy()) > 0) else clicks.sort_values("row_id")
    if not np.array_equal(base["row_id"].to_numpy(), out_ids if order is None else out_ids[order]):
        raise RuntimeError("engine output row_ids differ from the input's")
    cols: dict[str, np.ndarray | pd.api.extensions.ExtensionArray] = {c: base[c].array for c in base.columns}
    for name in spec.feature_names:
        vals = out[name].to_numpy(dtype=np.float64 if name not in spec.integer_features else None)
        if order is not None:
            vals = vals[order]
        cols[name] = vals.astype(np.int32 if name in spec.integer_features else np.float64, copy=False)
    # copy=False keeps one block per column: consolidating ~40 columns costs more than the features.
    return pd.DataFrame(cols, copy=False)


def with_row_id(clicks: pd.DataFrame) -> pd.DataFrame:
    if "row_id" in clicks:
        ids = clicks["row_id"].to_numpy()
        # strictly increasing (as every reader numbers them) is unique without hashing 4M ids
        if not np.all(ids[1:] > ids[:-1]) and clicks["row_id"].duplicated().any():
            raise ValueError("row_id must be unique")
        return clicks
    return clicks.assign(row_id=np.arange(len(clicks), dtype=np.int64))[
        ["row_id"] + list(clicks.columns)
    ]


def compute_features(
    clicks: pd.DataFrame, engine: str = DEFAULT_ENGINE, spec: FeatureSpec = DEFAULT_SPEC, **engine_options: object
) -> pd.DataFrame:
    """Features for every click in a validated click frame (attribution.schema), in row_id order."""
    clicks = with_row_id(clicks)
    if engine == "duckdb":
        from attribution.features.engines.duckdb import compute
    elif engine == "vectorized":
        from attribution.features.engines.vectorized import compute
    elif engine == "spark":
        from attribution.features.engines.spark import compute
    elif engine == "online":
        from attribution.features.online.state import compute
    else:
        raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    return conform_output(compute(clicks, spec, **engine_options), clicks, spec)


def compile_kernels() -> None:
    """Compile the numba kernels of the vectorized engine and of the in-process state once (numba caches
    them on disk), so that the processes started afterwards load them: in a fresh checkout each of four
    test workers compiled them itself (~21 CPU-s each)."""
    from attribution.features.engines.vectorized import warm_up, warm_up_clicks

    warm_up()
    compute_features(warm_up_clicks(), "online")
