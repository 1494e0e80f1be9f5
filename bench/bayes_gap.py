"""Holdout ROC-AUC of the default pipeline against the Bayes-optimal AUC on a synthetic stream.

    python bench/bayes_gap.py [--rows 2000000] [--seeds 0 1]

The generator records the probability it drew each label from (true_probability), so the best any model can
reach on the same holdout rows is known. Acceptance: the default pipeline is within 0.01 of it on 2M rows.
Writes bench/results/bayes_gap.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    a = ap.parse_args()
    from attribution.features.compute import compute_features
    from attribution.synth import generate
    from attribution.training.config import TrainConfig
    from attribution.training.train import train

    runs = []
    for seed in a.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            feats = Path(tmp) / "features.parquet"
            compute_features(generate(a.rows, seed=seed), "vectorized").to_parquet(feats)
            t0 = time.perf_counter()
            meta = train(feats, Path(tmp) / "model", TrainConfig(ablation=False))
            m = meta["holdout_metrics"]
            runs.append({"seed": seed, "rows": a.rows, "holdout_rows": m["rows"], "holdout_positives": m["positives"],
                         "roc_auc": round(m["roc_auc"], 4), "bayes_roc_auc": round(m["bayes_roc_auc"], 4),
                         "gap": round(m["bayes_roc_auc"] - m["roc_auc"], 4), "train_seconds": round(time.perf_counter() - t0, 1)})
            print(runs[-1], flush=True)
    result = {"title": "Default pipeline vs the Bayes-optimal AUC (synthetic)", "machine": machine(), "runs": runs,
              "target": "gap <= 0.01 on 2M rows"}
    write_results("bayes_gap", result, ["seed", "rows", "holdout AUC", "Bayes AUC", "gap", "train s"],
                  [[r["seed"], f"{r['rows']:,}", r["roc_auc"], r["bayes_roc_auc"], r["gap"], r["train_seconds"]] for r in runs],
                  ["Default settings (`TrainConfig()`), holdout = the last quarter of the stream by time.",
                   "Target: gap <= 0.01."])


if __name__ == "__main__":
    main()
