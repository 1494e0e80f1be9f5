"""What the prediction log costs batch scoring: the same runs with and without it, interleaved.

    python bench/monitor.py [--model-dir DIR] [--batch-rows 20000] [--repeats 9]

1. core only (no HTTP): `InferenceCore.predict` over 1,000-click batches of the real sample, with and without
   the log's hook, runs alternating; the log (production settings) is closed inside the timed region, so
   its Parquet writing (on its own thread, same process, same GIL) is all counted.
2. KServe on loopback: two predictors (one with --prediction_log) started side by side, 1,000-click V1
   requests from one client, runs alternating between them, each run on the same clicks. The log's file is
   written when it rolls (500,000 rows or 5 minutes) or on SIGTERM, outside these runs: the core figure is
   the one that counts the writing.
3. the log alone: its hook, writer thread and Parquet file on batches already parsed, in CPU µs per click,
   against the core's CPU µs per click: the steadiest estimate of the cost on a busy machine.
Both with clicks that carry a click_id (the usual case: the ad network's id) and without (the log makes one
per click and the predictor returns them). Each figure is the median of the runs; the ratio is with/without. The machine is shared (2 cores): the load
average before and after is recorded. Writes bench/results/monitor.json and monitor.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import machine, write_results
from serve import batches, free_port, model_dir, sample_clicks


class Predictor:
    """A KServe predictor process (optionally with a prediction log), in its own process group."""

    def __init__(self, mdir: Path, log_dir: str | None) -> None:
        self.port = free_port()
        self.predict_path, self.field = "/v1/models/attribution:predict", "instances"
        cmd = [sys.executable, "-m", "serving", f"--model_dir={mdir}", f"--http_port={self.port}", "--state=memory",
               "--enable_grpc=false", "--enable_latency_logging=false", "--configure_logging=false"]
        if log_dir:
            cmd.append(f"--prediction_log={log_dir}")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.3)
        raise RuntimeError("predictor did not start")

    def cpu_seconds(self) -> float:
        """The server process's CPU time so far, every thread, in ns resolution (Linux schedstat; /proc/PID/stat
        counts 10 ms ticks, too coarse for a run of a fraction of a second)."""
        total = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):  # a thread that ended meanwhile
                pass
        return total / 1e9

    def stop(self) -> float:
        t0 = time.perf_counter()
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)
        return time.perf_counter() - t0


def core_runs(mdir: Path, clicks: list[dict], rows: int, repeats: int, tmp: Path) -> dict:
    from attribution.inference import InferenceCore
    from attribution.monitoring.prediction_log import PredictionLog, model_id

    out: dict[str, list[float]] = {"without": [], "with": [], "cpu_without": [], "cpu_with": []}
    for k in range(repeats):
        part = clicks[(k * rows) % (len(clicks) - rows + 1) :][:rows]
        for mode in ("without", "with") if k % 2 == 0 else ("with", "without"):
            core = InferenceCore(mdir)  # fresh state: both modes score the same clicks from the same start
            plog = PredictionLog(str(tmp / f"core-{k}"), model_id(mdir)) if mode == "with" else None
            core.on_scored = plog.on_scored if plog else None
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, len(part), 1000):
                core.predict(part[i : i + 1000])
            if plog:
                plog.close()
                assert plog.stats()["logged_clicks"] == len(part), plog.stats()
            out[mode].append(len(part) / (time.perf_counter() - t0))
            out[f"cpu_{mode}"].append(len(part) / (time.process_time() - c0))  # all threads: the writer's too
    return out


def log_alone(clicks: list[dict], repeats: int, tmp: Path) -> dict:
    """The log's own CPU per click (hook + writer thread + Parquet file), on batches the core parsed: the
    figure least moved by the neighbours' load (CPU time of this process, every thread)."""
    from attribution.inference import parse_clicks
    from attribution.monitoring.prediction_log import PredictionLog

    batches_ = [parse_clicks(clicks[i : i + 1000]) for i in range(0, len(clicks) - 999, 1000)]
    p = np.linspace(0.0, 1.0, 1000)
    out = []
    for k in range(repeats):
        for b in batches_:
            b.click_ids, b.made_ids = (None, False) if "click_id" not in clicks[0] else (b.click_ids, False)
        c0 = time.process_time()
        plog = PredictionLog(str(tmp / f"alone-{k}"), "spec:model")
        for b in batches_:
            plog.on_scored(b, p)
        plog.close()
        out.append(1e6 * (time.process_time() - c0) / (1000 * len(batches_)))
    return {"cpu_us_per_click": round(statistics.median(out), 3), "runs": [round(v, 3) for v in out]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--batch-rows", type=int, default=20_000, help="clicks per run")
    ap.add_argument("--repeats", type=int, default=9, help="runs of each mode")
    a = ap.parse_args()
    mdir = model_dir(a.model_dir)
    plain_clicks = sample_clicks()
    with_ids = [{**c, "click_id": i} for i, c in enumerate(plain_clicks)]
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    runs: dict[str, dict[str, list[float]]] = {}
    try:
        alone = {name: log_alone(clicks, a.repeats, tmp / f"alone-{name}")
                 for name, clicks in (("ids", with_ids), ("made", plain_clicks))}
        for name, clicks in (("ids", with_ids), ("made", plain_clicks)):
            runs[f"core_{name}"] = core_runs(mdir, clicks, a.batch_rows, a.repeats, tmp / name)
            plain, logged = Predictor(mdir, None), Predictor(mdir, str(tmp / f"server-log-{name}"))
            server: dict[str, list[float]] = {"without": [], "with": [], "cpu_without": [], "cpu_with": []}
            try:
                for k in range(a.repeats):
                    part = clicks[(k * a.batch_rows) % (len(clicks) - a.batch_rows + 1) :][: a.batch_rows]
                    pair = ((plain, "without"), (logged, "with"))
                    for srv, mode in pair if k % 2 == 0 else pair[::-1]:
                        c0 = srv.cpu_seconds()
                        server[mode].append(batches(srv, part)["rows_per_s"])
                        server[f"cpu_{mode}"].append(len(part) / (srv.cpu_seconds() - c0))
            finally:
                plain.stop()
                close_s = logged.stop()
            runs[f"kserve_{name}"] = server
        from attribution.monitoring.prediction_log import read_predictions

        logged_rows = read_predictions(str(tmp / "server-log-made")).num_rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()

    def summary(runs: dict[str, list[float]]) -> dict:
        w, wo = statistics.median(runs["with"]), statistics.median(runs["without"])
        # each pair ran back to back on the same clicks, under the same neighbours' load: its ratio is the
        # steadier figure on a shared machine
        paired = statistics.median(1 - x / y for x, y in zip(runs["with"], runs["without"]))
        # rows per CPU-second of the scoring process: what throughput is when the cores are the limit, and far
        # less moved by the neighbours' load than wall time
        cw, cwo = statistics.median(runs["cpu_with"]), statistics.median(runs["cpu_without"])
        return {"rows_per_s_without": round(wo, 1), "rows_per_s_with": round(w, 1), "cost_pct": round(100 * (1 - w / wo), 2),
                "paired_cost_pct": round(100 * paired, 2), "rows_per_cpu_s_without": round(cwo, 1),
                "rows_per_cpu_s_with": round(cw, 1), "cpu_cost_pct": round(100 * (1 - cw / cwo), 2),
                "runs": {k: [round(v, 1) for v in vs] for k, vs in runs.items()}}

    result = {"title": "Prediction log: cost to batch scoring", "machine": machine(), "batch_rows": a.batch_rows,
              "repeats": a.repeats, "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in load_after],
              **{key: summary(r) for key, r in runs.items()}, "log_alone": alone,
              "kserve_logged_rows_last_server": logged_rows, "kserve_sigterm_to_exit_s": round(close_s, 2)}
    labels = {"core_ids": "inference core, clicks with click_id", "core_made": "inference core, click_ids made",
              "kserve_ids": "KServe V1, clicks with click_id", "kserve_made": "KServe V1, click_ids made and returned"}
    rows = [[label, result[key]["rows_per_cpu_s_without"], result[key]["rows_per_cpu_s_with"],
             f"{result[key]['cpu_cost_pct']}%", result[key]["rows_per_s_without"], result[key]["rows_per_s_with"],
             f"{result[key]['cost_pct']}%", f"{result[key]['paired_cost_pct']}%"] for key, label in labels.items()]
    notes = [(f"{a.repeats} runs of {a.batch_rows:,} real-sample clicks in 1,000-click batches per mode, alternating "
              "with and without the log; medians of rows/s, and the median of each back-to-back pair's ratio (every "
              "run in monitor.json). Core: the log (production settings) is closed, its file written, inside the timed "
              "region. KServe: the file is written when it rolls or on SIGTERM, outside the runs. rows/CPU-s: clicks "
              "per second of the scoring process's CPU time (all its threads; the server's, not the client's): the "
              "throughput when the cores are the limit, and the figure the neighbours' load moves least."),
             (f"Load average (1, 5, 15 min) before {result['load_average_before']}, after "
              f"{result['load_average_after']} on {os.cpu_count()} cores shared with other work. The last logging "
              f"server wrote {logged_rows:,} rows; SIGTERM to exit {result['kserve_sigterm_to_exit_s']} s (its file "
              "written in it).")]
    for name in ("ids", "made"):  # the log's CPU against the core's CPU per click: the cost when CPU-bound
        core_us = 1e6 / result[f"core_{name}"]["rows_per_cpu_s_without"]
        alone[name]["core_cpu_us_per_click"] = round(core_us, 3)
        alone[name]["cost_pct"] = round(100 * alone[name]["cpu_us_per_click"] / (core_us + alone[name]["cpu_us_per_click"]), 2)
    rows += [[(f"the log alone ({'clicks with click_id' if name == 'ids' else 'click_ids made'}): "
               f"{alone[name]['cpu_us_per_click']} µs CPU/click vs the core's {alone[name]['core_cpu_us_per_click']}"),
              "", "", f"{alone[name]['cost_pct']}%", "", "", "", ""] for name in ("ids", "made")]
    write_results("monitor", result, ["run", "rows/CPU-s without", "rows/CPU-s with", "CPU cost",
                                      "rows/s without", "rows/s with", "wall cost (medians)", "wall cost (pairs)"],
                  rows, notes)
    print((ROOT / "bench" / "results" / "monitor.md").read_text())


if __name__ == "__main__":
    main()
