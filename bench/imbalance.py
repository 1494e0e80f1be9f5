"""Class imbalance: negative down-sampling rates on the real sample's acceptance split, one run.

    python bench/imbalance.py [--rates 1.0 0.3 0.1 0.03]

Same data, split and parameters; only the kept fraction of negatives changes (probabilities are
re-calibrated by the recorded rate). Writes bench/results/imbalance.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REAL_SAMPLE as SAMPLE
from bench.common import machine, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=float, nargs="+", default=[1.0, 0.3, 0.1, 0.03])
    ap.add_argument("--input", default=str(SAMPLE))
    a = ap.parse_args()
    from attribution.training.config import TrainConfig
    from attribution.training.train import train

    runs = []
    for rate in a.rates:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            meta = train(a.input, tmp, TrainConfig(valid_from="2017-11-09 00:00:00", negative_rate=rate, ablation=False))
            m = meta["holdout_metrics"]
            runs.append({"negative_rate": rate, "roc_auc": round(m["roc_auc"], 4), "pr_auc": round(m["pr_auc"], 4),
                         "log_loss": round(m["log_loss"], 5), "ece": round(m["ece"], 5),
                         "mean_prediction": round(m["mean_prediction"], 5), "base_rate": round(m["positives"] / m["rows"], 5),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(runs[-1], flush=True)
    write_results("imbalance", {"title": "Negative down-sampling on the real sample", "machine": machine(), "runs": runs},
                  ["kept negatives", "ROC-AUC", "PR-AUC", "log loss", "ECE", "mean pred.", "base rate", "s"],
                  [[r["negative_rate"], r["roc_auc"], r["pr_auc"], r["log_loss"], r["ece"], r["mean_prediction"],
                    r["base_rate"], r["seconds"]] for r in runs],
                  ["Train before 2017-11-09, holdout after (28,561 clicks, 59 positives), default parameters."])


if __name__ == "__main__":
    main()
