"""Is the tuning step's capped sample big enough? Hyperopt parameter sets ranked on the capped fit part
against the same sets on `--scale` times as many rows, in one run.

Parameter sets are drawn from the tuning space (seeded); each is fitted, early-stopped, on the capped fit
part (training.tune.TUNE_FIT_ROWS rows, every positive kept) and on `--scale` x that many rows, both scored
on the same capped evaluation part (TUNE_EVAL_ROWS). Reported: the tuning ROC-AUC of each set at both
sizes, their rank agreement (Spearman), the regret of picking the capped sample's best (its AUC at the
bigger size against the bigger size's best), and the seconds per trial, which is what the cap buys.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from hyperopt.pyll.stochastic import sample
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, synthetic_clicks_path, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000, help="synthetic clicks (the fit part is ~60%%)")
    ap.add_argument("--sets", type=int, default=8, help="parameter sets drawn from the tuning space")
    ap.add_argument("--scale", type=float, default=3.0, help="the bigger fit part, in multiples of the cap")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    from attribution.evaluation.metrics import binary_metrics
    from attribution.features.compute import compute_features
    from attribution.io import read_clicks
    from attribution.model.estimators import feature_types
    from attribution.schema import CLICK_TIME, LABEL
    from attribution.training.booster import fit_early_stopped, quantile_matrices
    from attribution.training.config import TrainConfig
    from attribution.training.fit import fitted_features
    from attribution.training.split import TimeSplit, cap_rows
    from attribution.training.tune import SPACE, TUNE_EVAL_ROWS, TUNE_FIT_ROWS

    frame = compute_features(read_clicks(synthetic_clicks_path(args.rows)), "vectorized")
    cfg = TrainConfig(seed=args.seed)
    split = TimeSplit.of(frame[CLICK_TIME].to_numpy(), None, cfg.tune_fraction)
    y = frame[LABEL].to_numpy()
    union = fitted_features(frame[split.train], cfg, cfg.use_window_features, cfg.use_cat2vec)
    types = feature_types(union)
    eval_rows = cap_rows(split.tune, y, TUNE_EVAL_ROWS, args.seed + 2)
    X_eval, y_eval = union.transform(frame[eval_rows]), y[eval_rows]
    rng = np.random.default_rng(args.seed)
    sets = [sample(SPACE, rng=rng) for _ in range(args.sets)]

    sizes = {"cap": TUNE_FIT_ROWS, "bigger": int(args.scale * TUNE_FIT_ROWS)}
    runs: dict[str, dict] = {}
    for name, cap in sizes.items():
        fit_rows = cap_rows(split.fit, y, cap, args.seed)
        t0 = time.perf_counter()
        matrices = quantile_matrices(union.transform(frame[fit_rows]), y[fit_rows], X_eval, y_eval, types)
        build_s = time.perf_counter() - t0
        aucs, rounds, seconds = [], [], []
        for params in sets:
            t0 = time.perf_counter()
            booster, r = fit_early_stopped(*matrices, params, args.seed)
            p = booster.inplace_predict(X_eval, iteration_range=(0, r))
            seconds.append(round(time.perf_counter() - t0, 1))
            aucs.append(round(binary_metrics(y_eval, p)["roc_auc"], 5))
            rounds.append(r)
            print(name, len(aucs), aucs[-1], r, seconds[-1], flush=True)
        runs[name] = {"fit_rows": int(fit_rows.sum()), "fit_positives": int(y[fit_rows].sum()),
                      "matrices_s": round(build_s, 1), "aucs": aucs, "rounds": rounds, "seconds": seconds}

    cap, big = runs["cap"], runs["bigger"]
    rho = float(spearmanr(cap["aucs"], big["aucs"]).statistic)
    picked = int(np.argmax(cap["aucs"]))
    regret = max(big["aucs"]) - big["aucs"][picked]
    per_trial = {k: float(np.mean(v["seconds"])) for k, v in runs.items()}
    result = {
        "title": "Tuning sample: capped fit part vs a bigger one, same parameter sets",
        "machine": machine(), "load_after": os.getloadavg()[0], "args": vars(args), "eval_rows": int(eval_rows.sum()),
        "eval_positives": int(y_eval.sum()), "runs": runs, "spearman": round(rho, 3), "picked_by_cap": picked,
        "best_at_bigger": int(np.argmax(big["aucs"])), "regret_roc_auc": round(regret, 5),
        "seconds_per_trial": {k: round(v, 1) for k, v in per_trial.items()},
    }
    notes = [
        (f"Command: `python bench/tune_cap.py --rows {args.rows} --sets {args.sets} --scale {args.scale}` on "
        f"{machine()['cpus']} CPUs (1-min load after the run {os.getloadavg()[0]:.1f}). Both sizes are scored on "
        f"the same evaluation part: {result['eval_rows']:,} rows, {result['eval_positives']} positives."),
        (f"- rank agreement of the {args.sets} sets: **Spearman {rho:.3f}**; the cap picks set {picked}, the bigger "
        f"sample set {result['best_at_bigger']}: regret {regret:.5f} ROC-AUC at the bigger size"),
        (f"- seconds per trial: cap {per_trial['cap']:.1f} (20 trials ~{20 * per_trial['cap'] / 60:.1f} min), "
        f"bigger {per_trial['bigger']:.1f} (20 trials ~{20 * per_trial['bigger'] / 60:.1f} min); quantised "
        f"matrices built once per tuning step: {cap['matrices_s']} s vs {big['matrices_s']} s"),
    ]
    header = ["set", *(f"{k} AUC ({v['fit_rows']:,} rows)" for k, v in runs.items()), "cap rounds", "bigger rounds",
              "cap s", "bigger s"]
    rows = [[i, cap["aucs"][i], big["aucs"][i], cap["rounds"][i], big["rounds"][i], cap["seconds"][i],
             big["seconds"][i]] for i in range(args.sets)]
    write_results("tune_cap", result, header, rows, notes)
    print("\n".join(notes))


if __name__ == "__main__":
    main()
