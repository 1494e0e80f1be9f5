"""Times attribution.synth.generate at 1M and 10M rows; writes bench/results/generate.{json,md}.

    python bench/generate.py [--rows 1000000 10000000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from attribution.synth import generate

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_10M_S = 60.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    runs = []
    for rows in args.rows:
        t0 = time.perf_counter()
        df = generate(rows, seed=args.seed)
        secs = time.perf_counter() - t0
        y = df["is_attributed"].to_numpy()
        runs.append({
            "rows": rows,
            "seconds": round(secs, 2),
            "rows_per_s": round(rows / secs),
            "positive_rate": round(float(y.mean()), 5),
            "bayes_auc": round(float(roc_auc_score(y, df["true_probability"].to_numpy())), 4),
            "distinct_ips": int(df["ip"].nunique()),
            "frame_mb": round(df.memory_usage(deep=True).sum() / 2**20, 1),
        })
        print(json.dumps(runs[-1]), flush=True)
        del df
    result = {
        "benchmark": "attribution.synth.generate",
        "seed": args.seed,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__},
        "target": f"10M rows in < {TARGET_10M_S:.0f} s",
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "generate.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Synthetic generator benchmark",
        "",
        (f"`attribution.synth.generate(rows, seed={args.seed})` on {os.cpu_count()} CPUs "
         f"(Python {platform.python_version()}, numpy {np.__version__}). Target: {result['target']}."),
        "",
        "| rows | seconds | rows/s | positive rate | Bayes AUC | distinct ips |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(f"| {r['rows']:,} | {r['seconds']} | {r['rows_per_s']:,} | {r['positive_rate']:.3%} | "
                     f"{r['bayes_auc']} | {r['distinct_ips']:,} |")
    (RESULTS / "generate.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
