"""Training throughput, side by side in one run.

    python bench/train.py [--xgb-rows 10000000] [--spark-rows 2000000] [--rounds 50]

- XGBoost `hist` throughput in row-iterations/s per core on the model matrix of --xgb-rows synthetic rows
  (anchor: published hist figures of 1.5-4.8M row-iter/s/core), with 1 and with all cores;
- the Spark trainer's wall time as a ratio to the single-node trainer on the same --spark-rows rows, same
  parameters (target <= 3x in local mode);
- Cat2Vec fit speed in trained words/s (anchor: gensim ~150k words/s/core).
Each part runs in its own process. Peak memory of training at 20M rows and its projection come from
bench/scale.py (the train stage). Writes bench/results/train.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, machine, peak_rss_mb, run_child, synthetic_clicks_path, write_results


def features_frame(rows: int):
    from attribution.features.compute import compute_features
    from attribution.io import read_clicks

    return compute_features(read_clicks(synthetic_clicks_path(rows)), "vectorized")


def part_xgboost(rows: int, rounds: int) -> dict:
    import xgboost as xgb

    from attribution.model.estimators import make_features
    from attribution.training.booster import xgb_params
    from attribution.training.config import DEFAULT_PARAMS

    frame = features_frame(rows)
    union = make_features(use_cat2vec=True, seed=0).fit(frame.sample(n=min(len(frame), 300_000), random_state=0))
    X = union.transform(frame)
    y = frame["is_attributed"].to_numpy()
    del frame
    out = {"rows": rows, "features": int(X.shape[1]), "rounds": rounds}
    for threads in sorted({1, os.cpu_count() or 1}):
        d = xgb.QuantileDMatrix(X, y, nthread=threads)
        t0 = time.perf_counter()
        xgb.train(xgb_params(DEFAULT_PARAMS, 0, threads), d, num_boost_round=rounds)
        secs = time.perf_counter() - t0
        out[f"threads_{threads}"] = {"seconds": round(secs, 2),
                                     "row_iter_per_s_per_core": round(rows * rounds / secs / threads)}
        del d
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def part_trainers(rows: int) -> dict:
    from attribution.training.config import DEFAULT_PARAMS, TrainConfig
    from attribution.training.fit import train_variant
    from attribution.training.spark import train_variant_spark
    from attribution.training.split import TimeSplit

    frame = features_frame(rows)
    cfg = TrainConfig(ablation=False)
    split = TimeSplit.of(frame["click_time"].to_numpy(), None, cfg.tune_fraction)
    params = dict(DEFAULT_PARAMS)
    t0 = time.perf_counter()
    _, _, r1 = train_variant(frame, split, cfg, params, 1.0, True, True)
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, _, r2 = train_variant_spark(frame, split, cfg, params, 1.0)
    spark = time.perf_counter() - t0
    return {"rows": rows, "single_node_s": round(single, 1), "spark_s": round(spark, 1),
            "ratio": round(spark / single, 2), "rounds_single": r1, "rounds_spark": r2}


def part_cat2vec(rows: int) -> dict:
    from attribution.model.cat2vec import Cat2Vec

    frame = features_frame(rows)
    model = Cat2Vec(max_fit_rows=None, seed=0)
    t0 = time.perf_counter()
    model.fit(frame)
    secs = time.perf_counter() - t0
    return {"rows": rows, "seconds": round(secs, 1), "words_trained": model.words_trained_,
            "words_per_s": round(model.words_trained_ / secs), "workers": model.workers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--xgb-rows", type=int, default=10_000_000)
    ap.add_argument("--spark-rows", type=int, default=2_000_000)
    ap.add_argument("--cat2vec-rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        part, rows = a.one[0], int(a.one[1])
        fn = {"xgboost": lambda: part_xgboost(rows, a.rounds), "trainers": lambda: part_trainers(rows),
              "cat2vec": lambda: part_cat2vec(rows)}[part]
        print(json.dumps(fn()))
        return
    for rows in {a.xgb_rows, a.spark_rows, a.cat2vec_rows}:
        synthetic_clicks_path(rows)
    parts = {}
    for part, rows in (("xgboost", a.xgb_rows), ("trainers", a.spark_rows), ("cat2vec", a.cat2vec_rows)):
        parts[part] = run_child(Path(__file__), ["--rounds", str(a.rounds), "--one", part, str(rows)], timeout=7200)
        print(part, json.dumps(parts[part]), flush=True)
    scale = json.loads((RESULTS / "scale.json").read_text()) if (RESULTS / "scale.json").exists() else {}
    train_runs = [r for r in scale.get("runs", []) if r.get("stage") == "train"]
    table = []
    x = parts["xgboost"]
    for k, v in x.items():
        if k.startswith("threads_"):
            table.append([f"xgboost hist, {k.split('_')[1]} thread(s), {x['rows']:,} rows x {x['features']} features",
                          f"{v['row_iter_per_s_per_core']:,} row-iter/s/core", "1.5-4.8M row-iter/s/core"])
    t = parts["trainers"]
    if "ratio" in t:
        table.append([f"spark / single-node trainer, {t['rows']:,} rows", f"{t['ratio']}x ({t['spark_s']} s / {t['single_node_s']} s)", "<= 3x"])
    c = parts["cat2vec"]
    if "words_per_s" in c:
        table.append([f"Cat2Vec fit, {c['rows']:,} rows, {c['workers']} worker", f"{c['words_per_s']:,} words/s", "~150k words/s/core"])
    for r in train_runs:
        table.append([f"training peak memory, {r['rows']:,} rows (bench/scale.py)", f"{r.get('peak_rss_gib')} GiB",
                      "projection in scale.md"])
    result = {"title": "Training throughput", "machine": machine(), "parts": parts, "scale_train_runs": train_runs}
    write_results("train", result, ["measure", "value", "anchor / target"], table,
                  ["One run on this machine; each part in its own process."])


if __name__ == "__main__":
    main()
