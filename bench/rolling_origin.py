"""Rolling-origin evaluation on the real sample: the default model against an untuned raw-id XGBoost.

    python bench/rolling_origin.py [--floors 0 10] [--seeds 0]

Features are computed once over the whole sample (tests/data/train_sample.csv.gz, 100k clicks,
2017-11-06 16:00 to 2017-11-09 16:00 UTC). At each cut-off (every 12 h from the second day) both models
train on every click before it and are scored on the 24 h after it (the last cut-off has 16 h):

* default: the project's model (TrainConfig defaults: window features + Cat2Vec, early stopping on the
  last fifth of the training period, refit on all of it), once per rounds floor in --floors
  (0 = early stopping alone, the old behaviour);
* baseline: XGBoost on the five raw ids and nothing else, XGBoost's default parameters (eta 0.3, depth
  6), a fixed BASELINE_ROUNDS rounds, no tuning slice.

Writes bench/results/rolling_origin.{json,md}: per cut-off ROC-AUC and PR-AUC of each, then mean ± sd.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REAL_SAMPLE, machine, write_results

CUTOFFS = ("2017-11-07 12:00:00", "2017-11-08 00:00:00", "2017-11-08 12:00:00", "2017-11-09 00:00:00")
HORIZON_S = 24 * 3600
BASELINE_ROUNDS = 300


def baseline_scores(frame, train, holdout, seed: int) -> np.ndarray:
    import xgboost as xgb

    from attribution.model.estimators import RAW_ID_FEATURES
    from attribution.schema import LABEL

    X = frame[list(RAW_ID_FEATURES)].to_numpy(np.float32)
    y = frame[LABEL].to_numpy()
    booster = xgb.train({"objective": "binary:logistic", "tree_method": "hist", "seed": seed, "nthread": 2},
                        xgb.DMatrix(X[train], y[train]), BASELINE_ROUNDS)
    return booster.predict(xgb.DMatrix(X[holdout]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--floors", type=float, nargs="+", default=[0.0, 10.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    a = ap.parse_args()
    from attribution.evaluation.metrics import binary_metrics
    from attribution.features.compute import compute_features
    from attribution.io import read_clicks
    from attribution.model.bundle import ModelBundle
    from attribution.schema import CLICK_TIME, LABEL, to_epoch
    from attribution.training.config import DEFAULT_PARAMS, TrainConfig
    from attribution.training.fit import train_variant
    from attribution.training.split import TimeSplit

    frame = compute_features(read_clicks(REAL_SAMPLE), "vectorized")
    t = frame[CLICK_TIME].to_numpy()
    y = frame[LABEL].to_numpy()
    runs = []
    for seed in a.seeds:
        for cut in CUTOFFS:
            vf = to_epoch(cut)
            window = frame[t < vf + HORIZON_S]
            split = TimeSplit.of(window[CLICK_TIME].to_numpy(), vf, 0.2)
            holdout = window[split.holdout]
            row = {"seed": seed, "cutoff": cut, "train_positives": int(y[t < vf].sum()),
                   "tune_positives": int(window[LABEL].to_numpy()[split.tune].sum()),
                   "holdout_rows": len(holdout), "holdout_positives": int(holdout[LABEL].sum())}
            t0 = time.perf_counter()
            m = binary_metrics(holdout[LABEL].to_numpy(), baseline_scores(window, split.train, split.holdout, seed))
            row["baseline"] = {"roc_auc": m["roc_auc"], "pr_auc": m["pr_auc"], "rounds": BASELINE_ROUNDS,
                               "seconds": round(time.perf_counter() - t0, 1)}
            for floor in a.floors:
                cfg = TrainConfig(valid_from=cut, seed=seed, rounds_floor=floor, ablation=False, n_threads=2)
                t0 = time.perf_counter()
                union, booster, rounds = train_variant(window, split, cfg, dict(DEFAULT_PARAMS), 1.0, True, True)
                p = ModelBundle(union, booster, cfg.spec, 1.0).predict_proba(holdout)
                m = binary_metrics(holdout[LABEL].to_numpy(), p)
                row[f"default_floor_{floor:g}"] = {"roc_auc": m["roc_auc"], "pr_auc": m["pr_auc"], "rounds": rounds,
                                                   "seconds": round(time.perf_counter() - t0, 1)}
            runs.append(row)
            print({k: v for k, v in row.items()}, flush=True)

    models = ["baseline"] + [f"default_floor_{f:g}" for f in a.floors]
    summary = {}
    for name in models:
        for metric in ("roc_auc", "pr_auc"):
            v = np.array([r[name][metric] for r in runs])
            summary[f"{name}.{metric}"] = {"mean": round(float(v.mean()), 4), "sd": round(float(v.std(ddof=1)), 4)}
        summary[f"{name}.beats_baseline_everywhere"] = all(r[name]["roc_auc"] > r["baseline"]["roc_auc"] for r in runs)
    result = {"title": "Rolling-origin evaluation on the real sample (default model vs raw-id XGBoost)",
              "machine": machine(), "cutoffs": list(CUTOFFS), "horizon_hours": HORIZON_S // 3600,
              "baseline": f"raw ids, XGBoost defaults, {BASELINE_ROUNDS} rounds", "runs": runs, "summary": summary}
    table = []
    for r in runs:
        table.append([r["seed"], r["cutoff"], r["tune_positives"], r["holdout_positives"],
                      f"{r['baseline']['roc_auc']:.4f} / {r['baseline']['pr_auc']:.4f}"]
                     + [f"{r[n]['roc_auc']:.4f} / {r[n]['pr_auc']:.4f} ({r[n]['rounds']} rounds)" for n in models[1:]])
    table.append(["", "mean ± sd", "", "",
                  *[f"{summary[n + '.roc_auc']['mean']:.4f} ± {summary[n + '.roc_auc']['sd']:.4f} / "
                    f"{summary[n + '.pr_auc']['mean']:.4f} ± {summary[n + '.pr_auc']['sd']:.4f}" for n in models]])
    write_results("rolling_origin", result,
                  ["seed", "cut-off", "tune positives", "holdout positives", "baseline ROC / PR"]
                  + [f"default, floor {f:g}/lr: ROC / PR" for f in a.floors], table,
                  [f"Train on every click before the cut-off, score the next {HORIZON_S // 3600} h.",
                   (f"Baseline: {result['baseline']}. Default: TrainConfig defaults with the rounds floor shown "
                   "(refit rounds >= floor / learning_rate; 0 = early stopping alone)."),
                   "Beats the baseline at every cut-off: "
                   + ", ".join(f"{n}: {summary[n + '.beats_baseline_everywhere']}" for n in models[1:])])


if __name__ == "__main__":
    main()
