"""The predictor under pressure, with real processes: a paused Redis (SIGSTOP), overload and deadlines, the
KServe entry point's refusal of several workers with in-process state, request ids in bodies, headers and
the access log, and Flask's metrics as one view over gunicorn workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.redis_fixture import ROOT, RedisServer, ServerProcess, click_dicts, metric, replay_order

V1 = "/v1/models/attribution:predict"
CLICK = {"ip": 7, "app": 3, "device": 1, "os": 13, "channel": 100, "click_time": "2017-11-20 10:00:00"}
FAST = 0.1  # seconds: what "answers at once" means here


@pytest.mark.redis
def test_paused_redis_probes_and_metrics_answer_at_once_predictions_get_503_within_the_deadline(
        serving_model_dir, tmp_path):
    deadline = 0.3
    redis = RedisServer(tmp_path).start()
    srv = ServerProcess("kserve", serving_model_dir, redis.url, tmp_path, extra=(f"--deadline_ms={deadline * 1000:.0f}",))
    try:
        srv.wait_ready()
        s = requests.Session()
        assert s.post(srv.base + V1, json={"instances": [CLICK]}, timeout=10).status_code == 200
        os.kill(redis.proc.pid, signal.SIGSTOP)
        try:
            slow, predictions, late = [], 0, []
            paused_at = time.monotonic()
            end = paused_at + 3.0
            while time.monotonic() < end:
                for path in ("/v2/health/ready", "/v2/models/attribution/ready", "/metrics"):
                    t0 = time.perf_counter()
                    r = s.get(srv.base + path, timeout=5)
                    took = time.perf_counter() - t0
                    assert r.status_code == 200, (path, r.text[:200])
                    if took > FAST:
                        slow.append((path, round(took, 3)))
                t0, sent = time.perf_counter(), time.monotonic()
                r = s.post(srv.base + V1, json={"instances": [CLICK]}, timeout=10)
                took = time.perf_counter() - t0
                predictions += 1
                assert r.status_code == 503, r.text[:200]
                assert r.headers["Retry-After"] == "1" and r.json()["request_id"] == r.headers["X-Request-ID"]
                assert took < deadline + FAST, (took, r.text)
                if "deadline" in r.json()["error"]:
                    late.append(round(sent - paused_at, 2))
            assert not slow, slow
            # Until a ping has waited 0.1 s (pings every 0.2 s) requests reach the state and wait out the
            # deadline; from then on every one is refused before it reaches the state.
            assert predictions >= 10 and all(at < 1.0 for at in late), (predictions, late)
            text = s.get(srv.base + "/metrics", timeout=5).text
            assert metric(text, "attribution_state_up") == 0
            deadline_503s = float(next(line.rsplit(" ", 1)[1] for line in text.splitlines()
                                       if line.startswith('attribution_refused_total{reason="deadline"}')))
            assert metric(text, "attribution_state_errors_total") + deadline_503s >= predictions
        finally:
            os.kill(redis.proc.pid, signal.SIGCONT)
        end = time.monotonic() + 10
        while s.post(srv.base + V1, json={"instances": [CLICK]}, timeout=10).status_code != 200:
            assert time.monotonic() < end, "no recovery within 10 s of Redis resuming"
            time.sleep(0.1)
    finally:
        srv.stop()
        redis.stop()


def test_overload_and_deadline_are_fast_503s_with_retry_after(serving_model_dir, sample_clicks, tmp_path):
    """One request in flight at most and a 5 ms deadline, eight clients sending 1,000-click batches: every
    answer is a 200 or a 503 saying which limit, with Retry-After; none waits past the deadline by much."""
    srv = ServerProcess("kserve", serving_model_dir, "memory", tmp_path,
                        extra=("--max_in_flight=1", "--deadline_ms=5", "--score_threads=1"))
    clicks = click_dicts(replay_order(sample_clicks).head(1000))
    try:
        srv.wait_ready()

        def client(_: int) -> list[tuple[int, str, float, str | None]]:
            s, out = requests.Session(), []
            for _ in range(6):
                t0 = time.perf_counter()
                r = s.post(srv.base + V1, json={"instances": clicks}, timeout=30)
                out.append((r.status_code, r.text[:200], time.perf_counter() - t0, r.headers.get("Retry-After")))
            return out

        with ThreadPoolExecutor(8) as pool:
            answers = [a for part in pool.map(client, range(8)) for a in part]
        refusals = [text for status, text, _, retry in answers if status == 503 and retry == "1"]
        assert all(status in (200, 503) for status, *_ in answers), answers
        assert len(refusals) == sum(status == 503 for status, *_ in answers)
        assert any("overloaded" in t for t in refusals) and any("deadline of 5 ms exceeded" in t for t in refusals)
        text = requests.get(srv.base + "/metrics", timeout=5).text
        assert metric(text, "attribution_bad_requests_total") == 0
    finally:
        srv.stop()


def test_kserve_refuses_several_workers_with_memory_state(serving_model_dir):
    out = subprocess.run([sys.executable, "-m", "serving", f"--model_dir={serving_model_dir}", "--workers=2",
                          "--state=memory", "--enable_grpc=false"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2
    assert "--workers 2 with the in-memory state" in out.stderr + out.stdout


@pytest.mark.parametrize("kind", ["kserve", "flask"])
def test_request_ids_in_headers_error_bodies_and_the_access_log(kind, serving_model_dir, tmp_path):
    srv = ServerProcess(kind, serving_model_dir, "memory", tmp_path).wait_ready()
    path, field = (V1, "instances") if kind == "kserve" else ("/predict", "clicks")
    try:
        ok = requests.post(srv.base + path, json={field: [CLICK]}, headers={"X-Request-ID": "trace-42"}, timeout=10)
        assert ok.status_code == 200 and ok.headers["X-Request-ID"] == "trace-42"
        bad = requests.post(srv.base + path, json={field: [{**CLICK, "ip": -1}]}, timeout=10)
        made = bad.headers["X-Request-ID"]
        assert bad.status_code == 400 and bad.json()["request_id"] == made and len(made) == 32
        forged = requests.post(srv.base + path, json={field: [CLICK]}, headers={"X-Request-ID": "a b\tstatus=500"},
                               timeout=10)
        assert forged.headers["X-Request-ID"] != "a b\tstatus=500"  # not a token: replaced, never logged as sent
        big = requests.post(srv.base + path, data=b"[" * (1000 * 1024 + 65_537), timeout=10,
                            headers={"Content-Type": "application/json"})
        assert big.status_code == 413 and big.json()["request_id"] == big.headers["X-Request-ID"]
        assert "exceeds the limit of 1089536 bytes" in big.json()["error"]
        time.sleep(0.3)
        log = srv.log.read_text()
        assert f"request_id=trace-42 method=POST path={path} status=200" in log
        assert f"request_id={made} method=POST path={path} status=400" in log
        assert f"request_id={big.headers['X-Request-ID']} method=POST path={path} status=413" in log
        assert "status=500" not in log
        # one line per request, ours: kserve's timing middleware (two trace lines per request, its own route
        # scan) is left out of the stack
        assert "time:wall" not in log and "time:cpu" not in log
    finally:
        srv.stop()


@pytest.mark.redis
def test_flask_metrics_are_one_view_over_gunicorn_workers(serving_model_dir, tmp_path):
    redis = RedisServer(tmp_path).start()
    srv = ServerProcess("flask", serving_model_dir, redis.url, tmp_path, workers=2)
    try:
        srv.wait_ready()
        for i in range(40):  # gunicorn's sync workers close each connection: requests spread over both
            for _ in range(5):  # as a client does: a 503 (a Redis ping slower than its deadline under load) is retried
                r = requests.post(srv.base + "/predict", json={"clicks": [{**CLICK, "ip": i}]}, timeout=10)
                if r.status_code != 503:
                    break
                time.sleep(float(r.headers["Retry-After"]))
            assert r.status_code == 200, r.text
        def scrape(_: int) -> tuple[float, float]:
            text = requests.get(srv.base + "/metrics", timeout=10).text
            return metric(text, "attribution_requests_total"), metric(text, "attribution_clicks_scored_total")

        with ThreadPoolExecutor(4) as pool:  # concurrent scrapes: both workers answer some
            assert set(pool.map(scrape, range(24))) == {(40, 40)}  # whichever worker answers, and however many it scored
        time.sleep(0.3)
        served = {}  # access lines start "<time> <pid> serving.access": which workers scored, which were scraped
        for line in srv.log.read_text().splitlines():
            if "serving.access" in line and "status=200" in line:
                served.setdefault(line.split("path=")[1].split()[0], set()).add(line.split()[2])
        assert len(served["/metrics"]) == 2, served
        time.sleep(2.5)  # a stats round on each worker
        text = requests.get(srv.base + "/metrics", timeout=10).text
        keys = [line for line in text.splitlines() if line.startswith("attribution_state_keys{")]
        assert len(keys) == 1 and 'scope="state"' in keys[0], keys  # one series for the shared state, not one per worker
        assert float(keys[0].rsplit(" ", 1)[1]) > 0
        assert metric(text, "attribution_redis_keys") >= float(keys[0].rsplit(" ", 1)[1])
    finally:
        srv.stop()
        redis.stop()
