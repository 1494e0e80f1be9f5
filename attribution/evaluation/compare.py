"""The deployed model and the candidate scored on the same holdout rows, so that the deploy gate compares
quality and not the base rates of two different days.

    holdout = Holdout.load(features_uri, valid_from="2017-11-09 04:00:00")
    holdout.score("gs://b/models/run-7")  # {"roc_auc", "pr_auc", "log_loss", "holdout_rows", "positives", "from_ts"}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from attribution.evaluation.evaluate import MAX_BATCH_ROWS, _epochs, batch_rows_for, score_streamed
from attribution.evaluation.metrics import binary_metrics
from attribution.features.build import fits_in_memory, load_training_frame
from attribution.features.spec import DEFAULT_SPEC
from attribution.model.bundle import load_model
from attribution.schema import CLICK_TIME, LABEL, to_epoch
from attribution.storage import is_remote, local_file_for_read

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holdout:
    frame: pd.DataFrame | None  # None: a features Parquet too large to hold, streamed at each score
    from_ts: str
    source: str
    rows: int
    positives: int
    batch_rows: int = MAX_BATCH_ROWS

    @classmethod
    def load(cls, features_uri: str, valid_from: str, memory_budget: int | None = None) -> Holdout:
        """The labelled rows of features_uri (a local path or a URI) with click_time >= valid_from; a local
        features Parquet that the budget does not hold whole is only counted here and scored in batches."""
        if not valid_from:
            raise ValueError("the holdout needs the candidate's valid_from (its metadata.json has none)")
        if memory_budget is not None and not is_remote(features_uri) and is_features_parquet(features_uri) \
                and not fits_in_memory(features_uri, memory_budget):
            return cls._streamed(features_uri, str(valid_from), batch_rows_for(memory_budget))
        with local_file_for_read(features_uri) as local:
            frame = load_training_frame(local)
        if LABEL not in frame:
            raise ValueError(f"{features_uri}: the holdout needs the '{LABEL}' column (labelled clicks)")
        t = _epochs(frame[CLICK_TIME])
        rows = frame[t >= to_epoch(valid_from)].reset_index(drop=True)
        positives = int(rows[LABEL].sum())
        _check_classes(features_uri, valid_from, len(rows), positives)
        return cls(rows, str(valid_from), str(features_uri), len(rows), positives)

    @classmethod
    def _streamed(cls, path: str, valid_from: str, batch_rows: int) -> Holdout:
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        data = ds.dataset(path, format="parquet")
        if LABEL not in data.schema.names:
            raise ValueError(f"{path}: the holdout needs the '{LABEL}' column (labelled clicks)")
        labels = data.to_table(columns=[LABEL], filter=ds.field(CLICK_TIME) >= to_epoch(valid_from)).column(LABEL)
        positives = int(pc.sum(labels).as_py() or 0)
        _check_classes(path, valid_from, len(labels), positives)
        return cls(None, valid_from, path, len(labels), positives, batch_rows)

    def score(self, model_uri: str) -> dict:
        """The model at model_uri on these rows (ModelLoadError when it cannot be loaded)."""
        bundle = load_model(model_uri)
        if self.frame is None:
            scored, p, *_ = score_streamed(bundle, self.source, self.from_ts, self.batch_rows)
            y = scored[LABEL].to_numpy().astype(int)
        else:
            y, p = self.frame[LABEL].to_numpy().astype(int), bundle.predict_proba(self.frame)
        metrics = binary_metrics(y, p)
        out = {"roc_auc": float(metrics["roc_auc"]), "pr_auc": float(metrics["pr_auc"]),
               "log_loss": float(metrics["log_loss"]), "holdout_rows": len(y), "positives": int(y.sum()),
               "from_ts": self.from_ts, "model_uri": model_uri}
        log.info("%s on %d holdout rows from %s: roc_auc=%.4f pr_auc=%.4f", model_uri, len(y), self.from_ts,
                 out["roc_auc"], out["pr_auc"])
        return out

    def scorer(self, evaluated: dict, candidate_uri: str) -> Callable[[str], dict]:
        """score, except for the candidate when `evaluated` (its metrics.json from this run's evaluation
        step) covers exactly these rows: a holdout of 46M rows at full size is then scored once, not twice."""

        def score(model_uri: str) -> dict:
            if model_uri == candidate_uri and self.covered_by(evaluated):
                log.info("%s: the evaluation's figures on the same %d holdout rows", model_uri, self.rows)
                return {**{k: float(evaluated[k]) for k in ("roc_auc", "pr_auc", "log_loss")},
                        "holdout_rows": self.rows, "positives": self.positives, "from_ts": self.from_ts,
                        "model_uri": model_uri}
            return self.score(model_uri)

        return score

    def covered_by(self, evaluated: dict) -> bool:
        """Whether an evaluation's metrics are on these rows: same start, same row and positive counts."""
        figures = [evaluated.get(k) for k in ("roc_auc", "pr_auc", "log_loss")]
        return (str(evaluated.get("from_ts")) == self.from_ts and evaluated.get("rows") == self.rows
                and evaluated.get("positives") == self.positives
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in figures))


def _check_classes(source: str, valid_from: str, rows: int, positives: int) -> None:
    if rows == 0 or positives in (0, rows):
        raise ValueError(f"{source}: the {rows} holdout clicks from {valid_from} do not hold both "
                         "classes; ROC-AUC and PR-AUC are undefined there")


def is_features_parquet(path: str) -> bool:
    """A Parquet file or folder holding the default spec's features (not clicks still to compute)."""
    import pyarrow.dataset as ds

    p = Path(path)
    if not (p.suffix == ".parquet" or p.is_dir()):
        return False
    return set(DEFAULT_SPEC.feature_names) <= set(ds.dataset(p, format="parquet").schema.names)
