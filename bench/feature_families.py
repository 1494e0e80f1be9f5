"""What each feature family beyond the ip buys (issue 17.2), on the synthetic world and the real sample.

    python bench/feature_families.py [--rows 400000] [--seeds 3]

The families are in attribution/features/spec.py (FAMILIES): "campaign" (clicks and distinct ips per app,
channel, app x channel, app x os and device x os over the last hour and the 23 hours before it) and "ip_day"
(the ip groups' clicks in the 16 hours before the seed's 8). Per data set the wider spec's features are
computed once (vectorized engine), then the default model (TrainConfig defaults, no tuning, Cat2Vec on) is
trained with the seed spec, with each family added and with all of them, over `--seeds` seeds, on the same
time split (holdout: the last quarter). Deltas are paired per seed against the seed spec, with a 95%
interval and a verdict ("no measurable effect" when the interval covers 0). On the synthetic world the
Bayes ROC-AUC / PR-AUC of the holdout (its true probabilities) are reported beside them.

Writes bench/results/feature_families.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, write_results

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "train_sample.csv.gz"


def ablate(name: str, clicks: pd.DataFrame, seeds: int) -> dict:
    from attribution.evaluation.metrics import binary_metrics
    from attribution.features.compute import compute_features
    from attribution.features.spec import FAMILIES, spec_with
    from attribution.schema import CLICK_TIME, LABEL, TRUE_PROBABILITY
    from attribution.training.ablation import family_variants, run_ablation
    from attribution.training.config import DEFAULT_PARAMS, TrainConfig, negative_rate_for
    from attribution.training.split import TimeSplit

    t0 = time.perf_counter()
    frame = compute_features(clicks, "vectorized", spec=spec_with(*FAMILIES))
    features_s = time.perf_counter() - t0
    cfg = TrainConfig(ablation=False)
    split = TimeSplit.of(frame[CLICK_TIME].to_numpy(), None, cfg.tune_fraction)
    y = frame[LABEL].to_numpy()
    negative_rate = negative_rate_for(cfg, int((y[split.train] == 0).sum()))
    rows = run_ablation(frame, split, cfg, dict(DEFAULT_PARAMS), negative_rate, seeds, family_variants())
    holdout = frame[split.holdout]
    bayes = (binary_metrics(holdout[LABEL].to_numpy(), holdout[TRUE_PROBABILITY].to_numpy())
             if TRUE_PROBABILITY in holdout else None)
    result = {"data": name, "rows": len(frame), "holdout_rows": int(split.holdout.sum()),
              "holdout_positives": int(y[split.holdout].sum()), "features_seconds": round(features_s, 1),
              "seconds": round(time.perf_counter() - t0, 1), "variants": rows,
              "bayes": {k: bayes[k] for k in ("roc_auc", "pr_auc")} if bayes else None}
    print({k: v for k, v in result.items() if k != "variants"}, flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=400_000, help="synthetic clicks (attribution.synth.generate)")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per variant")
    ap.add_argument("--sets", nargs="+", choices=("synthetic", "real"), default=["synthetic", "real"])
    a = ap.parse_args()
    from attribution.io import read_clicks
    from attribution.synth import generate

    sets = []
    if "synthetic" in a.sets:
        sets.append(ablate(f"synthetic world, {a.rows:,} rows (seed 0)", generate(a.rows, seed=0), a.seeds))
    if "real" in a.sets:
        sets.append(ablate("real sample (Kaggle train_sample, 100,000 rows)", read_clicks(SAMPLE), a.seeds))
    table = []
    for s in sets:
        for v in s["variants"]:
            lo, hi = v["delta_roc_auc_interval"]
            plo, phi = v["delta_pr_auc_interval"]
            first = v is s["variants"][0]
            table.append([s["data"], v["variant"], v["features"], f"{v['roc_auc']:.4f}", f"{v['pr_auc']:.4f}",
                          "" if first else f"[{lo:+.4f}, {hi:+.4f}] {v['effect_roc_auc']}",
                          "" if first else f"[{plo:+.4f}, {phi:+.4f}] {v['effect_pr_auc']}", v["rounds"]])
    notes = [(f"Machine: {machine()}. Holdout = the last quarter by time; {a.seeds} seeds per variant; "
              "the default parameters (no tuning), Cat2Vec on; deltas paired per seed against the seed spec.")]
    for s in sets:
        line = (f"- {s['data']}: holdout {s['holdout_rows']:,} rows, {s['holdout_positives']} positives; "
                f"wide features computed in {s['features_seconds']} s, all variants {s['seconds']} s")
        if s["bayes"]:
            line += f"; Bayes ROC-AUC {s['bayes']['roc_auc']:.4f}, PR-AUC {s['bayes']['pr_auc']:.4f}"
        notes.append(line)
    write_results("feature_families", {"title": "Feature families beyond the ip: what each buys",
                                       "machine": machine(), "sets": sets},
                  ["data", "variant", "features", "ROC-AUC", "PR-AUC", "delta ROC-AUC (95%)", "delta PR-AUC (95%)",
                   "rounds"], table, notes)


if __name__ == "__main__":
    main()
