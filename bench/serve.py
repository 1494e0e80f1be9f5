"""Serving benchmark: the inference core alone, then real servers on loopback, before and after.

    python bench/serve.py [--model-dir DIR] [--requests 2000] [--concurrency 16] [--before REF]
    python bench/serve.py --validation-only [--rounds 3]     # the request validator alone, before/after

- core only (no HTTP): per-click µs for single clicks, rows/s (and rows per CPU second) for 1,000-click batches
- every figure after a warm-up (`--warmup`, untimed): a fresh server's first requests are not its steady state
- single-click latency p50/p99 over N sequential V1 requests (KServe) / /predict (Flask), memory and Redis
- throughput, clicks/s, with `concurrency` client threads sending single clicks
- batch scoring rows/s with 1,000-click requests, from one client and from two (the client's own work then
  overlaps the server's: the server's capacity)
- a paused Redis (SIGSTOP): for `--pause-seconds`, `--pause-clients` clients send single clicks while a
  prober reads /v2/health/ready, /v2/models/attribution/ready and /metrics; the share of predictions answered
  (200 or 503) within 100 ms, and the probes' worst latency
Before/after in the same run: `--before REF` (default: main) runs the KServe rows on `git archive REF`
unpacked to a temporary directory, alternating with this checkout, on the same model and clicks.
Clicks are the real sample's, in time order (each server starts with empty state). Without --model-dir a
small model is trained on the sample (fast settings, cached under the bench cache).
Writes bench/results/serve.json and serve.md.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import CACHE, machine, write_results
from common import REAL_SAMPLE as SAMPLE

from attribution.platform.loopback import free_port


def cpu_ticks() -> tuple[int, int]:
    """(all, stolen) CPU ticks so far (Linux /proc/stat): a VM's neighbours take the stolen ones."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[7] if len(fields) > 7 else 0


def model_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    d = CACHE / "serve_model"
    if not (d / "model.json").exists():
        from attribution.training.config import TrainConfig
        from attribution.training.train import train

        train(SAMPLE, d, TrainConfig(params={"max_rounds": 30}, ablation=False, cat2vec={"epochs": 1, "vector_size": 4}))
    return d


def sample_clicks() -> list[dict]:
    import pandas as pd

    from attribution.io import read_clicks

    df = read_clicks(SAMPLE).sort_values(["click_time", "row_id"], kind="stable")
    times = pd.to_datetime(df["click_time"], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S").tolist()
    cols = [df[c].tolist() for c in ("ip", "app", "device", "os", "channel")]
    return [{"ip": a, "app": b, "device": c, "os": d, "channel": e, "click_time": t} for a, b, c, d, e, t in zip(*cols, times)]


class Redis:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = CACHE / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir)], stdout=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Server:
    def __init__(self, kind: str, mdir: Path, state: str, workers: int = 1, code: Path = ROOT) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        if kind == "kserve":
            cmd = [sys.executable, "-m", "serving", f"--model_dir={mdir}", f"--http_port={self.port}", f"--state={state}",
                   "--enable_grpc=false", "--enable_latency_logging=false", "--configure_logging=false"]
            self.ready, self.predict_path, self.field = "/v2/health/ready", "/v1/models/attribution:predict", "instances"
        else:
            code = (f"from serving.flask_app import run_gunicorn; run_gunicorn({str(mdir)!r}, {self.port}, {state!r}, "
                    f"{workers}, host='127.0.0.1')")
            cmd = [sys.executable, "-c", code]
            self.ready, self.predict_path, self.field = "/healthz", "/predict", "clicks"
        env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base + self.ready, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.3)
        raise RuntimeError(f"{kind} did not start")

    def post(self, session: requests.Session, clicks: list[dict]) -> None:
        r = session.post(self.base + self.predict_path, json={self.field: clicks}, timeout=60)
        r.raise_for_status()

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


def latency(server: Server, clicks: list[dict], warmup: int = 0) -> dict:
    """Sequential single-click requests; the first `warmup` are sent untimed (see `--warmup`)."""
    s = requests.Session()
    for c in clicks[:warmup]:
        server.post(s, [c])
    times = []
    for c in clicks[warmup:]:
        t0 = time.perf_counter()
        server.post(s, [c])
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2)}


def throughput(server: Server, clicks: list[dict], concurrency: int) -> dict:
    chunks = [clicks[i::concurrency] for i in range(concurrency)]

    def worker(part: list[dict]) -> int:
        s = requests.Session()
        for c in part:
            server.post(s, [c])
        return len(part)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        n = sum(pool.map(worker, chunks))
    return {"clicks_per_s": round(n / (time.perf_counter() - t0), 1), "concurrency": concurrency, "requests": n}


def batches(server: Server, clicks: list[dict], size: int = 1000, concurrency: int = 1) -> dict:
    """1,000-click requests from `concurrency` clients, each over one keep-alive connection, taking the
    requests in turn. Clients encode with orjson inside the timed loop, as a batch client would: the
    stdlib json and requests cost ~2.5 ms of a ~10 ms request here, on the cores the server needs."""
    parts = [clicks[i : i + size] for i in range(0, len(clicks), size)]

    def client(mine: list[list[dict]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        for part in mine:
            conn.request("POST", server.predict_path, body=orjson.dumps({server.field: part}),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"batch request failed: {r.status} {body[:200]!r}")
            orjson.loads(body)
        conn.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, [parts[k::concurrency] for k in range(concurrency)]))
    return {"rows_per_s": round(len(clicks) / (time.perf_counter() - t0), 1), "batch": size, "concurrency": concurrency}


def core_only(mdir: Path, clicks: list[dict], n: int, warmup: int) -> dict:
    """The core in this process: `warmup` single clicks and as many clicks in 1,000-click batches untimed,
    then n single clicks, then 20,000 clicks in 1,000-click batches (wall and this process's CPU time)."""
    from attribution.inference import InferenceCore

    core = InferenceCore(mdir)
    for c in clicks[:warmup]:
        core.predict([c])
    times = []
    for c in clicks[warmup : warmup + n]:
        t0 = time.perf_counter()
        core.predict([c])
        times.append(time.perf_counter() - t0)
    us = np.asarray(times) * 1e6
    first = warmup + n
    for i in range(first, first + max(warmup, 1000), 1000):
        core.predict(clicks[i : i + 1000])
    first += max(warmup, 1000)
    rest = clicks[first : first + 20_000]
    t0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(0, len(rest), 1000):
        core.predict(rest[i : i + 1000])
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"single_p50_us": round(float(np.percentile(us, 50))), "single_p99_us": round(float(np.percentile(us, 99))),
            "batch1000_rows_per_s": round(len(rest) / wall, 1), "batch1000_rows_per_cpu_s": round(len(rest) / cpu, 1),
            "warmup_clicks": warmup}


def checkout(ref: str) -> Path:
    """`git archive REF` unpacked once per commit under the bench cache: the code the "before" rows run."""
    commit = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    d = CACHE / f"code-{commit[:12]}"
    if not (d / "serving").is_dir():
        d.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(d)], input=archive, check=True)
    return d


def paused(server: Server, redis: Redis, clicks: list[dict], seconds: float, clients: int) -> dict:
    """Redis stopped (SIGSTOP) for `seconds` while `clients` threads send single clicks and one prober reads
    the readiness endpoints and /metrics; every answer's time, whatever its status."""
    s = requests.Session()
    for c in clicks[:50]:
        server.post(s, [c])
    answers: list[tuple[int, float]] = []
    probes: list[tuple[str, int, float]] = []
    end = [0.0]

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        i = k
        while time.monotonic() < end[0]:
            body = orjson.dumps({server.field: [clicks[50 + i % (len(clicks) - 50)]]})
            t0 = time.perf_counter()
            try:
                conn.request("POST", server.predict_path, body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                answers.append((r.status, time.perf_counter() - t0))
            except (OSError, http.client.HTTPException):
                answers.append((0, time.perf_counter() - t0))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            i += clients

    def prober() -> None:
        while time.monotonic() < end[0]:
            for path in ("/v2/health/ready", "/v2/models/attribution/ready", "/metrics"):
                t0 = time.perf_counter()
                try:
                    status = requests.get(server.base + path, timeout=30).status_code
                except requests.RequestException:
                    status = 0
                probes.append((path, status, time.perf_counter() - t0))
            time.sleep(0.05)

    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        end[0] = time.monotonic() + seconds
        with ThreadPoolExecutor(clients + 1) as pool:
            list(pool.map(lambda k: client(k) if k < clients else prober(), range(clients + 1)))
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    ms = np.asarray([t for _, t in answers]) * 1e3
    statuses = {str(k): sum(1 for st, _ in answers if st == k) for k in sorted({st for st, _ in answers})}
    probe_ms = {p: round(max(t for q, _, t in probes if q == p) * 1e3, 1) for p in {q for q, _, _ in probes}}
    return {"requests": len(answers), "statuses": statuses,
            "answered_within_100ms": round(float((ms <= 100).mean()), 4) if len(ms) else 0.0,
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
            "probe_max_ms": probe_ms, "probe_non_200": sum(1 for _, st, _ in probes if st != 200),
            "seconds": seconds, "clients": clients}


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc): what the server itself spent,
    which other tenants' load on a shared VM moves far less than wall-clock time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kserve_memory(mdir: Path, clicks: list[dict], code: Path, a: argparse.Namespace) -> dict:
    """KServe, memory state: single-click latency, batch rows/s, and the server's CPU time for each; on one
    code tree."""
    server = Server("kserve", mdir, "memory", code=code)
    try:
        w = a.warmup
        s = requests.Session()
        cpu_w = server_cpu_seconds(server.proc.pid)
        for c in clicks[:w]:  # untimed: a fresh server's first requests and its empty state's growth
            server.post(s, [c])
        cpu0 = server_cpu_seconds(server.proc.pid)
        warm = {"requests": w, "server_cpu_ms_per_request": round((cpu0 - cpu_w) * 1e3 / max(w, 1), 3)}
        out = {"warmup": warm, "latency": latency(server, clicks[w : w + a.requests])}
        cpu1 = server_cpu_seconds(server.proc.pid)
        out["latency"]["server_cpu_ms_per_request"] = round((cpu1 - cpu0) * 1e3 / a.requests, 3)
        first, m = w + a.requests, a.batch_rows
        batches(server, clicks[first : first + max(w, 1000)])  # untimed: the batch path's first requests
        first += max(w, 1000)
        cpu1 = server_cpu_seconds(server.proc.pid)
        runs = [batches(server, clicks[first + k * m : first + (k + 1) * m]) for k in range(a.batch_repeats)]
        cpu2 = server_cpu_seconds(server.proc.pid)
        out["batch"] = {**runs[0], "rows_per_s": float(np.median([x["rows_per_s"] for x in runs])),
                        "runs": [x["rows_per_s"] for x in runs],
                        "server_cpu_rows_per_s": round(m * a.batch_repeats / max(cpu2 - cpu1, 1e-9), 1)}
    finally:
        server.stop()
    out["load_avg"] = os.getloadavg()
    return out


def kserve_paused(mdir: Path, clicks: list[dict], code: Path, a: argparse.Namespace) -> dict:
    redis = Redis()
    server = Server("kserve", mdir, redis.url, code=code)
    try:
        out = paused(server, redis, clicks, a.pause_seconds, a.pause_clients)
    finally:
        server.stop()
        redis.stop()
    out["load_avg"] = os.getloadavg()
    return out


VALIDATION_PROBE = """
import json, sys, time
from attribution.inference import parse_clicks
out = {}
for n in (1, 1000):
    for form in ("text", "epoch"):
        clicks = [{"ip": 5348 + i, "app": 19, "device": 1, "os": 13, "channel": 213,
                   "click_time": "2017-11-09 04:00:00" if form == "text" else 1510200000 + i} for i in range(n)]
        k = 2000 if n == 1 else 200
        parse_clicks(clicks)
        best = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(k):
                parse_clicks(clicks)
            best.append((time.perf_counter() - t0) / k * 1e6)
        out[f"{n} clicks, {form} times"] = round(min(best), 1)
print(json.dumps(out))
"""


def validation(trees: list[tuple[str, Path]], rounds: int) -> dict:
    """µs per `parse_clicks` call (the request validator), each tree in a fresh interpreter, alternating;
    the best of 3 loops per round, the median over rounds."""
    runs: dict[str, list[dict]] = {label: [] for label, _ in trees}
    for _ in range(rounds):
        for label, code in trees:
            env = {**os.environ, "PYTHONPATH": str(code)}
            out = subprocess.run([sys.executable, "-c", VALIDATION_PROBE], cwd=code, env=env, check=True,
                                 capture_output=True, text=True).stdout
            runs[label].append(orjson.loads(out.strip().splitlines()[-1]))
    return {label: {case: float(np.median([r[case] for r in rs])) for case in rs[0]} for label, rs in runs.items()}


def validation_main(a: argparse.Namespace) -> None:
    trees = [("after", ROOT), ("before", checkout(a.before))]
    result = {"title": "Request validation (parse_clicks), before and after", "machine": machine(),
              "before_ref": a.before, "load_avg_at_start": os.getloadavg()}
    result["us_per_call"] = validation(trees, a.rounds)
    result["load_avg_at_end"] = os.getloadavg()
    cases = list(result["us_per_call"]["after"])
    rows = [[case, result["us_per_call"]["before"][case], result["us_per_call"]["after"][case]] for case in cases]
    notes = [(f"µs per parse_clicks call, best of 3 loops, median of {a.rounds} alternating rounds, each in a fresh "
             f"interpreter; before = `git archive {a.before}`. Load average {result['load_avg_at_start'][0]:.1f} at start, "
             f"{result['load_avg_at_end'][0]:.1f} at end, on {machine()['cpus']} CPUs.")]
    write_results("serve_validation", result, ["request", "before µs", "after µs"], rows, notes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=1000,
                    help="single clicks sent untimed to each fresh server (and core) before timing, and as many "
                         "clicks in 1,000-click batches before the batch runs")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--throughput-requests", type=int, default=3200)
    ap.add_argument("--batch-rows", type=int, default=15_000, help="clicks per batch run")
    ap.add_argument("--batch-repeats", type=int, default=3, help="runs with one client, and as many with two")
    ap.add_argument("--before", default="main", help="git ref whose code gives the 'before' rows ('' to skip)")
    ap.add_argument("--pause-seconds", type=float, default=6.0)
    ap.add_argument("--pause-clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="alternating before/after rounds of the memory-state rows")
    ap.add_argument("--skip-servers", action="store_true", help="only core and before/after KServe rows")
    ap.add_argument("--validation-only", action="store_true",
                    help="only the request validator, before and after (bench/results/serve_validation.*)")
    a = ap.parse_args()
    if a.validation_only:
        return validation_main(a)
    mdir = model_dir(a.model_dir)
    clicks = sample_clicks()
    result: dict = {"title": "Serving benchmark (loopback)", "machine": machine(), "model_dir": str(mdir),
                    "load_avg_at_start": os.getloadavg()}
    ticks0 = cpu_ticks()
    result["core"] = core_only(mdir, clicks, a.requests, a.warmup)
    print("core", result["core"], flush=True)
    trees = [("after", ROOT)] + ([("before", checkout(a.before))] if a.before else [])
    result["before_ref"] = a.before
    result["kserve"] = {label: {"memory": []} for label, _ in trees}
    for k in range(a.rounds):  # after, before, after, before...: the machine's load falls on both alike
        for label, code in trees:
            run = kserve_memory(mdir, clicks, code, a)
            result["kserve"][label]["memory"].append(run)
            print(label, "memory", k, run, flush=True)
    for label, code in trees:
        result["kserve"][label]["redis_paused"] = kserve_paused(mdir, clicks, code, a)
        print(label, "paused", result["kserve"][label]["redis_paused"], flush=True)
    for label, _ in trees:
        runs = result["kserve"][label]["memory"]
        result["kserve"][label]["latency"] = {q: round(float(np.median([r["latency"][q] for r in runs])), 2) for q in ("p50_ms", "p99_ms")}
        result["kserve"][label]["batch_rows_per_s"] = float(np.median([r["batch"]["rows_per_s"] for r in runs]))
        result["kserve"][label]["server_cpu_ms_per_single"] = float(np.median([r["latency"]["server_cpu_ms_per_request"] for r in runs]))
        result["kserve"][label]["server_cpu_rows_per_s"] = float(np.median([r["batch"]["server_cpu_rows_per_s"] for r in runs]))
    n1, n2 = a.requests, a.throughput_requests
    configs = [] if a.skip_servers else [("flask", "memory", 1), ("kserve", "redis", 1), ("flask", "redis", 2)]
    result["servers"] = {}
    for kind, state, workers in configs:
        redis = Redis() if state == "redis" else None
        server = Server(kind, mdir, redis.url if redis else "memory", workers)
        try:
            name = f"{kind}/{state}" + (f" ({workers} workers)" if workers > 1 else "")
            r = {"latency": latency(server, clicks[: a.warmup + n1], a.warmup)}
            r["throughput"] = throughput(server, clicks[a.warmup + n1 : a.warmup + n1 + n2], a.concurrency)
            # alternating 1 and 2 clients over consecutive slices; the table gives each one's median
            first, m = a.warmup + n1 + n2, a.batch_rows
            runs = [batches(server, clicks[first + k * m : first + (k + 1) * m], concurrency=1 + k % 2)
                    for k in range(2 * a.batch_repeats)]
            for key, mine in (("batch", runs[0::2]), ("batch_2_clients", runs[1::2])):
                r[key] = {**mine[0], "rows_per_s": float(np.median([x["rows_per_s"] for x in mine])),
                          "runs": [x["rows_per_s"] for x in mine]}
            result["servers"][name] = r
            print(name, r, flush=True)
        finally:
            server.stop()
            if redis:
                redis.stop()
    result["load_avg_at_end"] = os.getloadavg()
    ticks1 = cpu_ticks()
    result["cpu_steal_share"] = round((ticks1[1] - ticks0[1]) / max(1, ticks1[0] - ticks0[0]), 4)
    notes_cpu: list[str] = []
    rows = [["core only (no HTTP)", f"{result['core']['single_p50_us'] / 1e3:.2f}", f"{result['core']['single_p99_us'] / 1e3:.2f}",
             "", result["core"]["batch1000_rows_per_s"], ""]]
    for label, r in result["kserve"].items():
        rows.append([f"kserve/memory ({label}; median of {a.rounds} rounds)", r["latency"]["p50_ms"], r["latency"]["p99_ms"], "",
                     r["batch_rows_per_s"], ""])
        notes_cpu.append(f"{label}: {r['server_cpu_ms_per_single']} ms of server CPU per single-click request, "
                         f"{r['server_cpu_rows_per_s']:.0f} rows per second of server CPU in 1,000-click batches")
    for name, r in result["servers"].items():
        rows.append([name, r["latency"]["p50_ms"], r["latency"]["p99_ms"], r["throughput"]["clicks_per_s"],
                     r["batch"]["rows_per_s"], r["batch_2_clients"]["rows_per_s"]])
    notes = [
        (f"Machine: {machine()['cpus']} CPUs, which the clients share with the server (load average "
         f"{result['load_avg_at_start'][0]:.1f} at start, {result['load_avg_at_end'][0]:.1f} at end; "
         f"{100 * result['cpu_steal_share']:.1f}% of CPU time stolen by the host). Runs of the same code on this VM have "
         "differed by up to ~1.4x; the batch runs in serve.json show the spread."),
        ("Only the core and KServe before/after rows were run (--skip-servers). " if a.skip_servers else "")
        + (f"Latency: {n1} sequential single-click requests; throughput: {n2} single-click requests from "
         f"{a.concurrency} client threads; batch: runs of {a.batch_rows} clicks in 1,000-click requests, alternately from "
         f"one client and from two, {a.batch_repeats} of each (median shown; all in serve.json), each client on a "
         "keep-alive connection, encoding with orjson. Real sample clicks "
         "in time order; booster nthread=1. KServe: one uvicorn process; Flask: gunicorn sync workers."),
        (f"Warm-up, excluded from every figure: each fresh server (and the core) first gets {a.warmup} single clicks "
         f"untimed, and {max(a.warmup, 1000)} clicks in 1,000-click requests before its batch runs. The warm-up's own "
         "server CPU per request is given for each round below, beside the timed requests': where the two are alike, "
         "a round's difference from another is the machine's (other tenants on the 2 shared CPUs), not a warm-up. "
         "Core only: "
         f"{result['core']['batch1000_rows_per_cpu_s']:.0f} rows per second of CPU in 1,000-click batches."),
    ]
    for label, r in result["kserve"].items():
        notes.append(f"KServe memory rounds ({label}), in order: p50/p99 ms "
                     + ", ".join(f"{x['latency']['p50_ms']}/{x['latency']['p99_ms']}" for x in r["memory"])
                     + "; server CPU ms per single-click request "
                     + ", ".join(str(x["latency"]["server_cpu_ms_per_request"]) for x in r["memory"])
                     + " (during the warm-up: "
                     + ", ".join(str(x["warmup"]["server_cpu_ms_per_request"]) for x in r["memory"]) + ")"
                     + "; batch rows/s " + ", ".join(f"{x['batch']['rows_per_s']:.0f}" for x in r["memory"])
                     + "; load average after each " + ", ".join(f"{x['load_avg'][0]:.1f}" for x in r["memory"]) + ".")
    if notes_cpu:
        notes.append("KServe's own CPU time (/proc, all threads; less moved by other tenants than wall time): "
                     + "; ".join(notes_cpu) + ".")
    for label, r in result["kserve"].items():
        p = r["redis_paused"]
        notes.append(
            f"KServe on Redis, Redis paused (SIGSTOP) {p['seconds']:.0f} s, {p['clients']} clients sending single clicks "
            f"({label}{', ' + a.before if label == 'before' else ''}): {100 * p['answered_within_100ms']:.1f}% of "
            f"{p['requests']} predictions answered within 100 ms (statuses {p['statuses']}; p50 {p['p50_ms']} ms, "
            f"p99 {p['p99_ms']} ms); slowest probe answers (ms) {p['probe_max_ms']}, {p['probe_non_200']} probes not 200; "
            f"load average {p['load_avg'][0]:.1f}.")
    write_results("serve", result, ["server / state", "p50 ms", "p99 ms", f"clicks/s @{a.concurrency}", "batch rows/s, 1 client",
                                    "batch rows/s, 2 clients"], rows, notes)


if __name__ == "__main__":
    main()
