"""Real redis-server processes for tests: free port, no persistence, stopped (and restartable) on demand.

    from tests.redis_fixture import RedisServer, redis_server   # the fixture: one server per test
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from attribution.platform.loopback import free_port


class RedisServer:
    """A redis-server on 127.0.0.1:<free port>, `--save "" --appendonly no`; `stop()` kills it (state
    lost, as after a crash), `start()` brings it back on the same port."""

    def __init__(self, workdir: Path, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not on PATH (make system-deps installs it)")
        self.port = port or free_port()
        self.workdir = Path(workdir)
        self.args = args  # more redis-server options (later ones win: --appendonly yes, --maxmemory ...)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--loglevel", "warning", *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} on port {self.port}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


# ---- serving test helpers: a model trained once, expected batch predictions, real server processes --------
import os
import signal
import sys
from typing import Self

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
_CACHE: dict[str, object] = {}
DAY = 86_400


def trained_model(tmp_path_factory, sample_path: Path) -> Path:
    """A small model trained once per session on the real sample (fast settings), shared by every module."""
    if "model" not in _CACHE:
        from attribution.training.config import TrainConfig
        from attribution.training.train import train

        d = tmp_path_factory.mktemp("serving_model") / "model"
        cfg = TrainConfig(params={"max_rounds": 30}, ablation=False, cat2vec={"epochs": 1, "vector_size": 4}, n_threads=2)
        train(sample_path, d, cfg)
        _CACHE["model"] = d
    return _CACHE["model"]  # type: ignore[return-value]


def expected_probabilities(tmp_path_factory, model_dir: Path, sample_path: Path) -> np.ndarray:
    """attribution.batch.predict_file over the whole sample, indexed by row_id."""
    if "expected" not in _CACHE:
        from attribution.batch import predict_file

        out = tmp_path_factory.mktemp("serving_expected") / "pred.parquet"
        predict_file(model_dir, sample_path, out)
        pred = pd.read_parquet(out)
        p = np.full(int(pred["row_id"].max()) + 1, np.nan)
        p[pred["row_id"].to_numpy()] = pred["probability"].to_numpy()
        _CACHE["expected"] = p
    return _CACHE["expected"]  # type: ignore[return-value]


def replay_order(clicks: pd.DataFrame) -> pd.DataFrame:
    """The sample in time order (ties by row), as a live stream would arrive."""
    return clicks.sort_values(["click_time", "row_id"], kind="stable").reset_index(drop=True)


def click_dicts(ordered: pd.DataFrame, shift: int = 0, text_time: bool = True) -> list[dict]:
    """JSON clicks: ids as integers, click_time as Kaggle text (or epoch seconds), shifted by `shift` s."""
    t = ordered["click_time"].to_numpy() + shift
    times = pd.to_datetime(t, unit="s").strftime("%Y-%m-%d %H:%M:%S").tolist() if text_time else t.tolist()
    cols = [ordered[c].tolist() for c in ("ip", "app", "device", "os", "channel")]
    return [
        {"ip": ip, "app": app, "device": dev, "os": os_, "channel": ch, "click_time": ts}
        for ip, app, dev, os_, ch, ts in zip(*cols, times)
    ]


class ServerProcess:
    """A predictor (KServe `python -m serving` or the Flask app under gunicorn) in its own process group;
    `with ServerProcess(...) as srv:` waits until it is ready and stops it at the end."""

    def __init__(self, kind: str, model_dir: Path, state: str, logdir: Path, workers: int = 1, max_batch: int = 1000,
                 extra: tuple[str, ...] = (), env: dict[str, str] | None = None):
        """`env`: more environment for the server (an emulator's endpoint, say)."""
        self.kind, self.port = kind, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        if kind == "kserve":
            cmd = [sys.executable, "-m", "serving", f"--model_dir={model_dir}", f"--http_port={self.port}",
                   f"--state={state}", f"--max_batch={max_batch}", "--enable_grpc=false",
                   "--enable_latency_logging=false",
                   # parity tests must not turn a loaded CI machine into 503s; guard tests pass their own
                   "--deadline_ms=20000", *extra]
            self.ready_path = "/v2/health/ready"
        elif extra:  # the flags through the real entry point, `attribution serve --flask` (it binds 0.0.0.0)
            cmd = [sys.executable, "-m", "attribution.cli", "serve", "--flask", f"--model-dir={model_dir}",
                   f"--port={self.port}", f"--state={state}", f"--workers={workers}", f"--max-batch={max_batch}", *extra]
            self.ready_path = "/healthz"
        else:
            code = (f"from serving.flask_app import run_gunicorn; run_gunicorn({str(model_dir)!r}, {self.port}, "
                    f"{state!r}, {workers}, host='127.0.0.1', max_batch={max_batch})")
            cmd = [sys.executable, "-c", code]
            self.ready_path = "/healthz"
        self.log = Path(logdir) / f"{kind}-{self.port}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(self.base + self.ready_path, timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.kind} server not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def __enter__(self) -> Self:
        try:
            self.wait_ready()
            return self
        except BaseException:
            self.stop()  # not ready: nothing will stop it otherwise
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group this helper started, nothing else
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def scraped_metric(base: str, name: str, timeout_s: float = 15.0) -> float:
    """A metric from /metrics, waiting for it: the state gauges come from a background watch that starts
    with the server's first request and publishes a snapshot a moment later."""
    import requests

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return metric(requests.get(base + "/metrics", timeout=30).text, name)
        except KeyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
