"""`make demo`: clicks through the whole pipeline (kfp.local) to a served prediction.

1. the pipeline runs locally through kfp.local on synthetic clicks (or --data), leaving a model directory,
   metrics.json and report.html under --output;
2. the KServe predictor starts on that model (in-process online state, a prediction log) on a free loopback
   port; the holdout's clicks are replayed through it in time order, then a few clicks are sent to the V1
   and V2 endpoints and the probabilities printed;
3. the monitor service starts on the prediction log, the stream's postbacks (its installs) are posted to it,
   and the live ROC-AUC is printed next to the holdout ROC-AUC (OUTPUT/live_metrics.json).

The terminal gets one line per pipeline step, the probabilities and where things are; the pipeline's,
the server's and the libraries' output goes to OUTPUT/demo.log.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd

from attribution.platform.loopback import free_port, wait_http

log = logging.getLogger("attribution.demo")

DEMO_CLICKS = [
    {"ip": 5348, "app": 19, "device": 0, "os": 24, "channel": 213, "click_time": "2017-11-09 10:00:00", "click_id": 1},
    {"ip": 87540, "app": 12, "device": 1, "os": 13, "channel": 497, "click_time": "2017-11-09 10:00:01", "click_id": 2},
    {"ip": 87540, "app": 12, "device": 1, "os": 13, "channel": 497, "click_time": "2017-11-09 10:00:02", "click_id": 3},
]


def post(url: str, body: dict | list) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as err:  # show the server's reason, not only the status
        raise RuntimeError(f"{url}: HTTP {err.code}: {err.read().decode(errors='replace')}") from err


REPLAY_ID_OFFSET = 10**9  # the replayed clicks' ids (row_id + offset) never meet the demo clicks' own


def holdout_stream(model_dir: Path, data: str) -> pd.DataFrame:
    """The clicks of the model's holdout, in time order, with their click_ids."""
    from attribution.io import read_clicks
    from attribution.schema import to_epoch

    clicks = read_clicks(data)
    valid_from = json.loads((model_dir / "metadata.json").read_text())["valid_from"]
    stream = clicks[clicks["click_time"] >= to_epoch(valid_from)].sort_values(["click_time", "row_id"], kind="stable")
    return stream.assign(click_id=stream["row_id"] + REPLAY_ID_OFFSET).reset_index(drop=True)


def replay(base: str, stream: pd.DataFrame, size: int = 1000) -> None:
    times = pd.to_datetime(stream["click_time"], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S").tolist()
    fields = ["ip", "app", "device", "os", "channel"]
    rows = [dict(zip(fields, r)) for r in stream[fields].itertuples(index=False, name=None)]
    for row, t, cid in zip(rows, times, stream["click_id"].tolist()):
        row["click_time"], row["click_id"] = t, cid
    for i in range(0, len(rows), size):
        post(f"{base}/v1/models/attribution:predict", {"instances": rows[i : i + size]})


def serve_and_query(model_dir: Path, stream: pd.DataFrame | None = None, prediction_log: Path | None = None) -> list[float]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "serving", f"--model_dir={model_dir}", f"--http_port={port}", "--state=memory"]
    if prediction_log is not None:
        cmd.append(f"--prediction_log={prediction_log}")
    log.info("starting the predictor: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd)  # inherits stdout/stderr: the log file under the demo's output
    try:
        wait_http(f"{base}/v2/health/ready", proc, timeout_s=120.0)
        if stream is not None:
            replay(base, stream)
            log.info("replayed %d holdout clicks", len(stream))
        v1 = post(f"{base}/v1/models/attribution:predict", {"instances": DEMO_CLICKS})
        log.info("V1 %s -> %s", "/v1/models/attribution:predict", v1)
        fields = ["ip", "app", "device", "os", "channel"]
        v2_body = {"inputs": [{"name": f, "shape": [1], "datatype": "INT64", "data": [DEMO_CLICKS[0][f]]} for f in fields]
                   + [{"name": "click_time", "shape": [1], "datatype": "BYTES", "data": ["2017-11-09 10:00:05"]}]}
        v2 = post(f"{base}/v2/models/attribution/infer", v2_body)
        log.info("V2 %s -> %s", "/v2/models/attribution/infer", v2["outputs"][0]["data"])
        return list(v1["predictions"])
    finally:
        proc.terminate()  # SIGTERM: the predictor writes its prediction log before it exits
        proc.wait(timeout=30)


def live_quality(model_dir: Path, stream: pd.DataFrame, prediction_log: Path, out: Path) -> dict:
    """The monitor service on the prediction log; the stream's postbacks posted to it; its live metrics."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "attribution.cli", "monitor", "--serve", f"--predictions={prediction_log}",
           f"--reference={model_dir}", f"--port={port}", f"--state-dir={out / 'monitor-state'}"]
    log.info("starting the monitor: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd)
    try:
        wait_http(f"{base}/healthz", proc, timeout_s=120.0)
        installs = stream[stream["attributed_time"].notna()]
        times = pd.to_datetime(installs["attributed_time"].astype("int64"), unit="s").dt.strftime("%Y-%m-%d %H:%M:%S")
        items = [{"click_id": int(c), "attributed_time": t} for c, t in zip(installs["click_id"], times)]
        for i in range(0, len(items), 1000):
            post(f"{base}/v1/attributions", items[i : i + 1000])
        with urllib.request.urlopen(f"{base}/v1/metrics", timeout=300) as r:
            live = json.loads(r.read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    (out / "live_metrics.json").write_text(json.dumps(live, indent=1))
    log.info("live metrics: %s", {k: live[k] for k in ("roc_auc", "pr_auc", "log_loss", "clicks", "labelled", "positives")})
    return live


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=300_000, help="synthetic clicks when no --data")
    p.add_argument("--data", default=None, help="a click file in the Kaggle format instead of synthetic data")
    p.add_argument("--output", default="out/demo")
    a = p.parse_args(argv)
    from attribution.console import details_to
    from pipelines.local_run import run_local

    out = Path(a.output)
    log_path = out / "demo.log"
    t0 = time.perf_counter()
    with details_to(log_path) as say:
        say(f"attribution demo: {'--data ' + a.data if a.data else f'{a.rows:,} synthetic clicks'}; "
            f"details in {log_path}")
        say("pipeline (kfp.local):")
        try:
            run = run_local(data=a.data, rows=None if a.data else a.rows, output=str(out), on_task=say)
            stream = holdout_stream(out / "model", run["data"])
            say(f"serving (KServe, in-process state, prediction log): {len(stream):,} holdout clicks replayed")
            prediction_log = out / "predictions"
            shutil.rmtree(prediction_log, ignore_errors=True)
            shutil.rmtree(out / "monitor-state", ignore_errors=True)
            probs = serve_and_query(out / "model", stream, prediction_log)
            for click, prob in zip(DEMO_CLICKS, probs):
                say(f"  P(download | app={click['app']:>3} ip={click['ip']:>6} at {click['click_time']}) = {prob:.5f}")
            live = live_quality(out / "model", stream, prediction_log, out)
        except Exception as err:
            log.exception("demo failed")
            say(f"demo failed: {err}\n  see {log_path}")
            raise SystemExit(1) from None
        holdout = json.loads((out / "metrics.json").read_text())
        say(f"live quality (monitor service, {live['positives']:,} postbacks over {live['labelled']:,} labelled clicks):")
        say(f"  ROC-AUC live {live['roc_auc']:.4f} | holdout {holdout['roc_auc']:.4f}   "
            f"PR-AUC live {live['pr_auc']:.4f} | holdout {holdout['pr_auc']:.4f}")
        say(f"done in {time.perf_counter() - t0:.0f}s")
        say(f"  model directory : {out / 'model'}")
        say(f"  metrics         : {out / 'metrics.json'}")
        say(f"  report          : {out / 'report.html'}")
        say(f"  live metrics    : {out / 'live_metrics.json'}")
        say(f"  log             : {log_path}")


if __name__ == "__main__":
    main()
