"""Benchmark of `attribution run`: wall time and peak memory per pipeline step through kfp.local, and the
kfp.local overhead (the whole run vs the same step functions called directly, in one process).

    python bench/pipeline.py --rows 1000000 [--rows 10000000] [--output bench/results/pipeline]

Peak memory of a step is the largest RSS sum of its task process and that process's children (Spark's
JVM included), sampled every 0.2 s. Writes <output>.json and <output>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import psutil

STEPS = ["resolve_input", "extract_features", "fit_cat2vec", "tune_params", "train_model", "evaluate_model",
         "deploy_model"]


class StepMonitor(threading.Thread):
    """Samples this process's descendants; attributes each to the component it executes."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval, self.stop_flag, self.steps = interval, threading.Event(), {}

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop_flag.is_set():
            now = time.perf_counter()
            try:
                kids = me.children(recursive=False)
            except psutil.Error:
                kids = []
            for kid in kids:
                try:
                    cmd = " ".join(kid.cmdline())
                    step = next((s for s in STEPS if f"--function_to_execute {s}" in cmd or
                                 f"--function_to_execute', '{s}" in cmd), None)
                    if step is None:
                        continue
                    rss = kid.memory_info().rss + sum(c.memory_info().rss for c in kid.children(recursive=True))
                except psutil.Error:
                    continue
                s = self.steps.setdefault(step, {"first": now, "last": now, "peak_rss": 0})
                s["last"], s["peak_rss"] = now, max(s["peak_rss"], rss)
            time.sleep(self.interval)


def run_pipeline(data: str, out: Path) -> dict:
    from pipelines.local_run import run_local

    mon = StepMonitor()
    mon.start()
    t0 = time.perf_counter()
    result = run_local(data=data, output=out)
    wall = time.perf_counter() - t0
    mon.stop_flag.set()
    mon.join()
    steps = {k: {"seconds": round(v["last"] - v["first"], 1), "peak_rss_mb": round(v["peak_rss"] / 2**20)}
             for k, v in sorted(mon.steps.items(), key=lambda kv: kv[1]["first"])}
    return {"seconds": round(wall, 1), "steps": steps, "roc_auc": json.loads(Path(result["metrics"]).read_text())["roc_auc"]}


def run_direct(data: str, out: Path) -> dict:
    """The same component bodies (python_func), with artifacts as plain objects; no kfp.local."""
    from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model

    import components as c

    out.mkdir(parents=True, exist_ok=True)
    art = {"features": Dataset(uri=str(out / "features")), "cat2vec": Model(uri=str(out / "cat2vec")),
           "params": Artifact(uri=str(out / "params")), "model": Model(uri=str(out / "model")),
           "metrics": Metrics(uri=str(out / "metrics")), "classification": ClassificationMetrics(uri=str(out / "cls")),
           "report": HTML(uri=str(out / "report")), "decision": Artifact(uri=str(out / "decision"))}
    calls = [
        ("resolve_input", lambda: c.resolve_input.python_func(snapshot_date="", run_id="bench")),
        ("extract_features", lambda: c.extract_features.python_func(data=data, feature_engine="vectorized",
                                                                    features=art["features"])),
        ("fit_cat2vec", lambda: c.fit_cat2vec.python_func(features=art["features"], cat2vec=art["cat2vec"])),
        ("tune_params", lambda: c.tune_params.python_func(features=art["features"], cat2vec=art["cat2vec"],
                                                          params=art["params"])),
        ("train_model", lambda: c.train_model.python_func(features=art["features"], cat2vec=art["cat2vec"],
                                                          params=art["params"], model=art["model"], runtime="local")),
        ("evaluate_model", lambda: c.evaluate_model.python_func(
            features=art["features"], model=art["model"], metrics=art["metrics"],
            classification=art["classification"], report=art["report"])),
        ("deploy_model", lambda: c.deploy_model.python_func(model=art["model"], metrics=art["metrics"],
                                                            decision=art["decision"], min_roc_auc=0.9,
                                                            min_pr_auc=0.05, runtime="local")),
    ]
    steps, t0 = {}, time.perf_counter()
    for name, call in calls:
        t = time.perf_counter()
        call()
        steps[name] = {"seconds": round(time.perf_counter() - t, 1)}
    return {"seconds": round(time.perf_counter() - t0, 1), "steps": steps}


def markdown(doc: dict) -> str:
    lines = ["# `attribution run` through kfp.local\n", f"Machine: {doc['machine']}.\n"]
    for r in doc["runs"]:
        lines.append(f"## {r['rows']:,} rows\n")
        lines.append(f"Data generation (before the pipeline): {r['generate_seconds']} s. Whole kfp.local run: "
                     f"{r['pipeline']['seconds']} s; the same steps called directly: {r['direct']['seconds']} s; "
                     f"**overhead ratio {r['overhead_ratio']}**. Holdout ROC-AUC {r['pipeline']['roc_auc']:.4f}.\n")
        lines.append("| step | kfp.local wall (s) | peak RSS (MB) | direct wall (s) |\n|---|---:|---:|---:|")
        for step in STEPS:
            p = r["pipeline"]["steps"].get(step, {})
            d = r["direct"]["steps"].get(step, {})
            lines.append(f"| {step} | {p.get('seconds', '-')} | {p.get('peak_rss_mb', '-')} | {d.get('seconds', '-')} |")
        lines.append("")
    if doc.get("note"):
        lines.append(doc["note"] + "\n")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, action="append", help="rows per run (repeatable); default 1M")
    ap.add_argument("--output", default=str(Path(__file__).parent / "results" / "pipeline"))
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    from pipelines.local_run import generate_clicks

    runs = []
    load_at_start = os.getloadavg()[0]
    for rows in a.rows or [1_000_000]:
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
            t = time.perf_counter()
            data = str(generate_clicks(rows, 0, Path(tmp) / "clicks.parquet"))
            gen = round(time.perf_counter() - t, 1)
            pipe = run_pipeline(data, Path(tmp) / "pipeline")
            direct = run_direct(data, Path(tmp) / "direct")
            runs.append({"rows": rows, "generate_seconds": gen, "pipeline": pipe, "direct": direct,
                         "overhead_ratio": round(pipe["seconds"] / direct["seconds"], 3)})
            print(json.dumps(runs[-1], indent=2), flush=True)
    doc = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                      f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM (load average {load_at_start:.1f} at start, "
                      f"{os.getloadavg()[0]:.1f} at end)",
           "runs": runs, "note": a.note}
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output + ".json").write_text(json.dumps(doc, indent=2))
    Path(a.output + ".md").write_text(markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
