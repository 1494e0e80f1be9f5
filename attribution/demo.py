"""`make demo`: clicks through the whole pipeline (kfp.local) to a served prediction.

1. the pipeline runs locally through kfp.local on synthetic clicks (or --data), leaving a model directory,
   metrics.json and report.html under --output;
2. the KServe predictor starts on that model (in-process online state) on a free loopback port;
3. a few clicks are sent to the V1 and V2 endpoints and the probabilities printed.

The terminal gets one line per pipeline step, the probabilities and where things are; the pipeline's,
the server's and the libraries' output goes to OUTPUT/demo.log.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger("attribution.demo")

DEMO_CLICKS = [
    {"ip": 5348, "app": 19, "device": 0, "os": 24, "channel": 213, "click_time": "2017-11-09 10:00:00", "click_id": 1},
    {"ip": 87540, "app": 12, "device": 1, "os": 13, "channel": 497, "click_time": "2017-11-09 10:00:01", "click_id": 2},
    {"ip": 87540, "app": 12, "device": 1, "os": 13, "channel": 497, "click_time": "2017-11-09 10:00:02", "click_id": 3},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as err:  # show the server's reason, not only the status
        raise RuntimeError(f"{url}: HTTP {err.code}: {err.read().decode(errors='replace')}") from err


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"predictor exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("predictor not ready in time")


def serve_and_query(model_dir: Path) -> list[float]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "serving", f"--model_dir={model_dir}", f"--http_port={port}", "--state=memory"]
    log.info("starting the predictor: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd)  # inherits stdout/stderr: the log file under the demo's output
    try:
        wait_ready(base, proc)
        v1 = post(f"{base}/v1/models/attribution:predict", {"instances": DEMO_CLICKS})
        log.info("V1 %s -> %s", "/v1/models/attribution:predict", v1)
        fields = ["ip", "app", "device", "os", "channel"]
        v2_body = {"inputs": [{"name": f, "shape": [1], "datatype": "INT64", "data": [DEMO_CLICKS[0][f]]} for f in fields]
                   + [{"name": "click_time", "shape": [1], "datatype": "BYTES", "data": ["2017-11-09 10:00:05"]}]}
        v2 = post(f"{base}/v2/models/attribution/infer", v2_body)
        log.info("V2 %s -> %s", "/v2/models/attribution/infer", v2["outputs"][0]["data"])
        return list(v1["predictions"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


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
            run_local(data=a.data, rows=None if a.data else a.rows, output=str(out), on_task=say)
            say("serving (KServe, in-process state):")
            probs = serve_and_query(out / "model")
        except Exception as err:
            log.exception("demo failed")
            say(f"demo failed: {err}\n  see {log_path}")
            raise SystemExit(1) from None
        for click, prob in zip(DEMO_CLICKS, probs):
            say(f"  P(download | app={click['app']:>3} ip={click['ip']:>6} at {click['click_time']}) = {prob:.5f}")
        say(f"done in {time.perf_counter() - t0:.0f}s")
        say(f"  model directory : {out / 'model'}")
        say(f"  metrics         : {out / 'metrics.json'}")
        say(f"  report          : {out / 'report.html'}")
        say(f"  log             : {log_path}")


if __name__ == "__main__":
    main()
