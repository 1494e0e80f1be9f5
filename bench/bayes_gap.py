"""The synthetic world's known truth against the default pipeline and an ids-only oracle.

    python bench/bayes_gap.py [--rows 1000000] [--seeds 0]

The generator records the probability it drew each label from (true_probability), so on the holdout (the
last quarter of the stream by time) the best any model can reach is known: the Bayes ROC-AUC and PR-AUC.
Two scores are set against it:

* the ids-only oracle, E[true_probability | app, device, os, channel] taken on the holdout itself (the
  best any model of the raw ids alone could do, drift included): it must sit >= 0.02 ROC-AUC below
  Bayes, so the world needs the window features;
* the default pipeline (`TrainConfig()`, ablation off): within 0.01 ROC-AUC of Bayes, PR-AUC >= 80% of
  Bayes'.

Bayes knows hidden state no click-time model sees: which (ip, device, os, app) already installed in an
earlier session (p = 0 there), which ip is a farm, and the clicks dropped after an install. The causal
oracle is the generator's own formula (synth.true_probability) on the features the pipeline computed from
the output stream, without that state: what a model that learnt every coefficient exactly would score. Its
distance to Bayes is the part of the model's gap no model of these features can close.

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


def causal_oracle(holdout) -> dict:
    """ROC/PR-AUC of synth.true_probability on the holdout's computed features (no hidden state)."""
    from attribution.evaluation.metrics import binary_metrics
    from attribution.synth import true_probability

    ids = {f: holdout[f].to_numpy().astype("int64") for f in ("app", "device", "os", "channel")}
    p = true_probability(
        ids["app"], ids["device"], ids["os"], ids["channel"], holdout["secs_since_prev_ip_device_os_app"].to_numpy(),
        holdout["clicks_ip_1s_300s"].to_numpy(), holdout["clicks_ip_app_1s_300s"].to_numpy(),
        holdout["clicks_ip_app_301s_3600s"].to_numpy(), holdout["clicks_ip_3601s_28800s"].to_numpy(),
    )
    return binary_metrics(holdout["is_attributed"].to_numpy(), p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    a = ap.parse_args()
    from attribution.evaluation.metrics import binary_metrics
    from attribution.features.compute import compute_features
    from attribution.schema import to_epoch
    from attribution.synth import generate
    from attribution.training.config import TrainConfig
    from attribution.training.train import train

    runs = []
    for rows in a.rows:
        for seed in a.seeds:
            clicks = generate(rows, seed=seed)
            with tempfile.TemporaryDirectory() as tmp:
                feats = Path(tmp) / "features.parquet"
                frame = compute_features(clicks, "vectorized")
                frame.to_parquet(feats)
                t0 = time.perf_counter()
                meta = train(feats, Path(tmp) / "model", TrainConfig(ablation=False))
                seconds = time.perf_counter() - t0
            holdout = clicks[clicks["click_time"] >= to_epoch(meta["valid_from"])]
            y = holdout["is_attributed"].to_numpy()
            bayes = binary_metrics(y, holdout["true_probability"].to_numpy())
            oracle_p = holdout.groupby(["app", "device", "os", "channel"])["true_probability"].transform("mean")
            oracle = binary_metrics(y, oracle_p.to_numpy())
            causal = causal_oracle(frame[frame["click_time"] >= to_epoch(meta["valid_from"])])
            m = meta["holdout_metrics"]
            assert m["rows"] == len(holdout) and m["positives"] == int(y.sum()), "the same holdout"
            runs.append({
                "seed": seed, "rows": rows, "holdout_rows": m["rows"], "holdout_positives": m["positives"],
                "bayes_roc_auc": round(bayes["roc_auc"], 4), "bayes_pr_auc": round(bayes["pr_auc"], 4),
                "oracle_roc_auc": round(oracle["roc_auc"], 4), "oracle_pr_auc": round(oracle["pr_auc"], 4),
                "causal_roc_auc": round(causal["roc_auc"], 4), "causal_pr_auc": round(causal["pr_auc"], 4),
                "model_roc_auc": round(m["roc_auc"], 4), "model_pr_auc": round(m["pr_auc"], 4),
                "oracle_gap": round(bayes["roc_auc"] - oracle["roc_auc"], 4),
                "model_gap": round(bayes["roc_auc"] - m["roc_auc"], 4),
                "model_pr_share": round(m["pr_auc"] / bayes["pr_auc"], 3),
                "rounds": meta["rounds"], "train_seconds": round(seconds, 1),
            })
            print(runs[-1], flush=True)
    result = {"title": "Synthetic world: default pipeline and ids-only oracle vs the Bayes-optimal scores",
              "machine": machine(), "runs": runs,
              "targets": "oracle gap >= 0.02; model gap <= 0.01; model PR-AUC >= 0.8 x Bayes PR-AUC"}
    write_results(
        "bayes_gap", result,
        ["seed", "rows", "holdout positives", "Bayes ROC / PR", "ids-only oracle ROC / PR", "oracle gap",
         "causal oracle ROC / PR",
         "model ROC / PR", "model gap", "model PR / Bayes PR", "rounds", "train s"],
        [[r["seed"], f"{r['rows']:,}", r["holdout_positives"], f"{r['bayes_roc_auc']} / {r['bayes_pr_auc']}",
          f"{r['oracle_roc_auc']} / {r['oracle_pr_auc']}", r["oracle_gap"],
          f"{r['causal_roc_auc']} / {r['causal_pr_auc']}", f"{r['model_roc_auc']} / {r['model_pr_auc']}",
          r["model_gap"], r["model_pr_share"], r["rounds"], r["train_seconds"]] for r in runs],
        [("Holdout = the last quarter of the stream by time. Oracle = E[true_probability | app, device, os, "
         "channel] on the holdout itself. Causal oracle = the generator's formula on the computed features, "
         "without the hidden state (earlier installs, farms, dropped clicks). Model = `TrainConfig()` defaults, "
         "ablation off."),
         "Targets: oracle gap >= 0.02, model gap <= 0.01, model PR-AUC >= 80% of Bayes'."])


if __name__ == "__main__":
    main()
