"""The deployed model and the candidate scored on the same holdout rows, so that the deploy gate compares
quality and not the base rates of two different days.

    holdout = Holdout.load(features_uri, valid_from="2017-11-09 04:00:00")
    holdout.score("gs://b/models/run-7")  # {"roc_auc", "pr_auc", "log_loss", "holdout_rows", "positives", "from_ts"}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from attribution.evaluation.evaluate import _epochs
from attribution.evaluation.metrics import binary_metrics
from attribution.features.build import load_training_frame
from attribution.model.bundle import load_model
from attribution.schema import CLICK_TIME, LABEL, to_epoch
from attribution.storage import local_file_for_read

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holdout:
    frame: pd.DataFrame
    from_ts: str
    source: str

    @classmethod
    def load(cls, features_uri: str, valid_from: str) -> Holdout:
        """The labelled rows of features_uri (a local path or a URI) with click_time >= valid_from."""
        if not valid_from:
            raise ValueError("the holdout needs the candidate's valid_from (its metadata.json has none)")
        with local_file_for_read(features_uri) as local:
            frame = load_training_frame(local)
        if LABEL not in frame:
            raise ValueError(f"{features_uri}: the holdout needs the '{LABEL}' column (labelled clicks)")
        t = _epochs(frame[CLICK_TIME])
        rows = frame[t >= to_epoch(valid_from)].reset_index(drop=True)
        y = rows[LABEL].to_numpy()
        if len(rows) == 0 or y.min() == y.max():
            raise ValueError(f"{features_uri}: the {len(rows)} holdout clicks from {valid_from} do not hold both "
                             "classes; ROC-AUC and PR-AUC are undefined there")
        return cls(rows, str(valid_from), str(features_uri))

    def score(self, model_uri: str) -> dict:
        """The model at model_uri on these rows (ModelLoadError when it cannot be loaded)."""
        bundle = load_model(model_uri)
        y = self.frame[LABEL].to_numpy().astype(int)
        metrics = binary_metrics(y, bundle.predict_proba(self.frame))
        out = {"roc_auc": float(metrics["roc_auc"]), "pr_auc": float(metrics["pr_auc"]),
               "log_loss": float(metrics["log_loss"]), "holdout_rows": len(y), "positives": int(y.sum()),
               "from_ts": self.from_ts, "model_uri": model_uri}
        log.info("%s on %d holdout rows from %s: roc_auc=%.4f pr_auc=%.4f", model_uri, len(y), self.from_ts,
                 out["roc_auc"], out["pr_auc"])
        return out

