"""The label loop: prediction log, postbacks, live quality, drift.

Units (the log's overflow and close, the label rules, order independence, PSI, postback errors) and the
acceptance run: the real sample replayed through a real KServe predictor with --prediction-log, stopped with
SIGTERM (nothing lost), then the batch monitor and the monitor service over HTTP on the same postbacks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from attribution.monitoring import prediction_log as plog_mod
from attribution.monitoring.cloudevents import REQUEST_TYPE, RESPONSE_TYPE
from attribution.monitoring.drift import categorical_histogram, drift, psi, reference_histograms
from attribution.monitoring.live import (
    PostbackError,
    Postbacks,
    canonical_click_id,
    live_metrics,
    parse_horizon,
    parse_postbacks,
)
from attribution.monitoring.prediction_log import SCHEMA, PredictionLog, read_predictions
from attribution.monitoring.service import Monitor, create_app
from tests.redis_fixture import ROOT, click_dicts, free_port, metric, replay_order

JSON = {"Content-Type": "application/json"}
H = 3600


# ---- helpers ---------------------------------------------------------------------------------------------
class Batch:
    """What the core hands the hook: ids (n, 5), t, click_ids."""

    def __init__(self, n: int, start: int = 0, click_ids: list | None = None) -> None:
        self.ids = np.arange(5 * n, dtype=np.int64).reshape(n, 5)
        self.t = np.full(n, 1_510_000_000 + start, np.int64)
        self.click_ids = click_ids if click_ids is not None else [str(start + i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.t)


def predictions_table(ids: list[str], t: list[int], p: list[float], model: str = "m1", served: list[float] | None = None) -> pa.Table:
    n = len(ids)
    cols = {"click_id": ids, **{f: list(range(n)) for f in ("ip", "app", "device", "os", "channel")},
            "click_time": t, "probability": p, "model_id": [model] * n,
            "served_at": served if served is not None else [1000.0 + i for i in range(n)]}
    return pa.table(cols, schema=SCHEMA)


class Proc:
    """A process of ours in its own group, stopped with SIGTERM."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.log = log
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, url: str, timeout: float = 120.0) -> Proc:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"not ready:\n{self.log.read_text()[-3000:]}")

    def sigterm(self, timeout: float = 30.0) -> int:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            raise


# ---- the prediction log -----------------------------------------------------------------------------------
def test_log_rolls_files_and_close_writes_the_rest(tmp_path):
    log = PredictionLog(str(tmp_path / "log"), "spec:abc", roll_rows=10, roll_seconds=3600)
    for k in range(5):
        log.on_scored(Batch(4, start=4 * k), np.linspace(0, 1, 4))
    log.close()
    files = sorted(p.name for p in (tmp_path / "log").iterdir())
    assert len(files) >= 2 and not any(f.startswith("_") for f in files)  # rolled at 10 rows, no temporary left
    table = read_predictions(str(tmp_path / "log"))
    assert sorted(map(int, table["click_id"].to_pylist())) == list(range(20))
    assert set(table["model_id"].to_pylist()) == {"spec:abc"}
    log.close()  # idempotent


def test_log_makes_click_ids_for_clicks_without_one(tmp_path):
    log = PredictionLog(str(tmp_path), "m")
    batch = Batch(3, click_ids=["7", None, None])
    log.on_scored(batch, np.zeros(3))
    log.close()
    assert batch.click_ids[0] == "7" and all(c.startswith("m-") and len(c) >= 20 for c in batch.click_ids[1:])
    assert len(set(batch.click_ids)) == 3
    assert sorted(read_predictions(str(tmp_path))["click_id"].to_pylist()) == sorted(batch.click_ids)
    canonical_click_id(batch.click_ids[1])  # a postback may name a made id


def test_a_full_queue_drops_counts_and_never_blocks(tmp_path, monkeypatch, caplog):
    gate, real = threading.Event(), plog_mod.rows_table
    monkeypatch.setattr(plog_mod, "rows_table", lambda *a: (gate.wait(30), real(*a))[1])
    log = PredictionLog(str(tmp_path), "m", max_queue=1, roll_rows=1)
    log.on_scored(Batch(2), np.zeros(2))  # taken by the writer, which then waits on the gate
    deadline = time.monotonic() + 10
    while log._queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.perf_counter()
    for k in range(1, 6):
        log.on_scored(Batch(2, start=2 * k), np.zeros(2))
    assert time.perf_counter() - t0 < 0.5  # the request path did not wait for the writer
    assert log.stats()["dropped_clicks"] == 8 and log.stats()["dropped_batches"] == 4
    assert "not logged" in caplog.text
    gate.set()
    log.close()
    assert log.stats()["logged_clicks"] == 4


# ---- labels, metrics, drift -------------------------------------------------------------------------------
def test_label_rules_horizon_duplicates_unknown():
    t0 = 1_510_000_000
    table = predictions_table(["1", "2", "3", "4", "2"], [t0, t0, t0, t0 + 10 * H, t0], [0.9, 0.2, 0.6, 0.5, 0.99])
    pb = Postbacks()
    pb.add(["1", "2", "1", "99"], [t0 + 60, t0 + 2 * 86400, t0 + 30, t0])
    m = live_metrics(table, pb, as_of=t0 + 30 * H, horizon=24 * H)
    # 1: attributed within 24h (earliest of its two postbacks); 2: too late -> negative, and its repeated
    # answer (0.99) ignored; 3: negative; 4: label not complete at as_of
    assert (m["clicks"], m["labelled"], m["positives"]) == (4, 3, 1)
    assert (m["duplicates"], m["unknown_click_ids"], m["repeated_predictions"], m["postbacks"]) == (1, 1, 1, 4)
    assert m["roc_auc"] == pytest.approx(roc_auc_score([1, 0, 0], [0.9, 0.2, 0.6]))
    assert m["calibration"]["ratio"] == pytest.approx(1.7)
    lo, hi = m["calibration"]["interval"]
    assert lo < 1.7 < hi
    later = live_metrics(table, pb, as_of=t0 + 40 * H, horizon=24 * H)
    assert later["labelled"] == 4


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_the_order_of_logs_and_postbacks_changes_nothing(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    ids = [str(i) for i in range(n)]
    t = (1_510_000_000 + rng.integers(0, 3 * 86400, n)).tolist()
    p = rng.random(n).tolist()
    pos = [i for i in range(n) if rng.random() < 0.4] + [n + 5]
    times = [t[i] + int(rng.integers(0, 2 * 86400)) if i < n else t[0] for i in pos]
    table = predictions_table(ids, t, p, model=str(seed % 2))
    a, b = Postbacks(), Postbacks()
    a.add([str(i) for i in pos], times)
    order = rng.permutation(len(pos))
    b.add([str(pos[i]) for i in order] + [str(pos[0])], [times[i] for i in order] + [times[0] + 5])
    b.duplicates -= 1
    b.received -= 1
    as_of = 1_510_000_000 + 5 * 86400
    perm = rng.permutation(n)
    shuffled = table.take(pa.array(perm))
    assert json.dumps(live_metrics(table, a, as_of), sort_keys=True) == json.dumps(live_metrics(shuffled, b, as_of), sort_keys=True)


def test_psi_is_zero_on_the_reference_and_large_on_a_shift():
    rng = np.random.default_rng(0)
    apps = rng.choice(50, 20_000, p=np.r_[np.full(10, 0.08), np.full(40, 0.005)])
    t = 1_510_000_000 + rng.integers(0, 86400, 20_000)
    scores = rng.beta(1, 50, 20_000)
    cols = {"app": apps, "device": apps % 3, "os": apps % 7, "channel": apps % 11, "click_time": t}
    ref = {"model_id": "m", **reference_histograms(cols, scores)}
    same = drift(ref, cols, scores)
    assert set(same) == {"app", "device", "os", "channel", "score"} and max(same.values()) < 1e-9
    shifted = drift(ref, {**cols, "app": (apps + 1) % 50}, scores * 3)
    assert shifted["app"] > 0.2 and shifted["score"] > 0.2 and shifted["device"] < 1e-9
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert categorical_histogram(np.array([3, 3, 9]), top=1)["fractions"] == pytest.approx([2 / 3, 1 / 3])


@pytest.mark.parametrize(("items", "where"), [
    ({"click_id": 1}, "expected an array"),
    ([], "empty batch"),
    ([{"click_id": 1}], "item 0, field 'attributed_time': missing"),
    ([{"click_id": 1, "attributed_time": "2017-11-09 10:00:00"}, {"click_id": -3, "attributed_time": 5}], "item 1, field 'click_id'"),
    ([{"click_id": "abc", "attributed_time": 5}], "item 0, field 'click_id'"),
    ([{"click_id": 1, "attributed_time": "yesterday"}], "item 0, field 'attributed_time'"),
    ([{"click_id": 1, "attributed_time": 5, "x": 1}], "item 0, field 'x': unknown field"),
    ([5], "item 0: expected an object"),
])
def test_bad_postbacks_name_the_item_and_field(items, where):
    with pytest.raises(PostbackError, match=where):
        parse_postbacks(items)


def test_horizon_text():
    assert [parse_horizon(x) for x in ("24h", "90m", "2d", "30", "15s")] == [86400, 5400, 172800, 30, 15]
    for bad in ("0h", "-1h", "1w", ""):
        with pytest.raises(ValueError):
            parse_horizon(bad)


# ---- the service in-process: postbacks, KServe logger events, Prometheus --------------------------------------
def test_service_postbacks_are_idempotent_and_client_mistakes_are_4xx(tmp_path):
    t0 = 1_510_000_000
    log = PredictionLog(str(tmp_path / "log"), "m1")
    log.on_scored(Batch(3, click_ids=["1", "2", "3"]), np.array([0.9, 0.1, 0.2]))
    log.close()
    monitor = Monitor(str(tmp_path / "log"), state_dir=str(tmp_path / "state"), unknown_ttl=3600)
    client = create_app(monitor).test_client()
    body = [{"click_id": 1, "attributed_time": t0 + 60}, {"click_id": "1", "attributed_time": t0 + 60},
            {"click_id": 42, "attributed_time": t0}]
    r = client.post("/v1/attributions", json=body)
    assert r.status_code == 200 and r.get_json() == {"received": 3, "new": 2, "duplicates": 1, "unknown": 1}
    again = client.post("/v1/attributions", json={"attributions": body[:1]}).get_json()
    assert again == {"received": 1, "new": 0, "duplicates": 1, "unknown": 0}
    before = client.get(f"/v1/metrics?as_of={t0 + 2 * 86400}").get_json()
    for bad, status in ((b"{", 400), (json.dumps([{"click_id": 1}]).encode(), 400), (b"[]", 400)):
        r = client.post("/v1/attributions", data=bad, headers=JSON)
        assert r.status_code == status and "error" in r.get_json()
    assert client.post("/v1/attributions", data="x", headers={"Content-Type": "text/plain"}).status_code == 400
    assert client.get("/v1/metrics?as_of=soon").status_code == 400
    after = client.get(f"/v1/metrics?as_of={t0 + 2 * 86400}").get_json()
    assert after == before and (after["positives"], after["duplicates"], after["unknown_click_ids"]) == (1, 2, 1)
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, "attribution_postbacks_total") == 4
    assert metric(text, "attribution_unknown_click_ids") == 1
    monitor.close()
    # the journal brings the postbacks back after a restart
    restarted = Monitor(str(tmp_path / "log"), state_dir=str(tmp_path / "state"))
    restarted.refresh()
    assert restarted.metrics(t0 + 2 * 86400) == after
    restarted.close()


def test_unknown_click_ids_are_kept_for_a_bounded_time(tmp_path):
    monitor = Monitor(str(tmp_path / "log"), unknown_ttl=3600, max_unknown=2)
    monitor.add_postbacks(["5", "6", "7"], [1, 1, 1])  # over max_unknown: the oldest given up
    assert "5" not in monitor.postbacks.attributed and monitor.postbacks.dropped_unknown == 1
    log = PredictionLog(str(tmp_path / "log"), "m1")
    log.on_scored(Batch(1, click_ids=["6"]), np.array([0.5]))  # the log catches up with a kept one
    log.close()
    monitor.refresh()
    monitor.unknown_ttl = -1  # everything still unknown is now too old
    monitor.add_postbacks(["8"], [1])
    assert set(monitor.postbacks.attributed) == {"6"}
    assert monitor.metrics(10**10)["unknown_click_ids"] == 3  # 5, 7, 8 given up


def test_kserve_logger_events_become_log_rows(tmp_path):
    monitor = Monitor(str(tmp_path / "log"), logger_model="isvc")
    client = create_app(monitor).test_client()
    clicks = [{"ip": 1, "app": 2, "device": 3, "os": 4, "channel": 5, "click_time": "2017-11-09 10:00:00", "click_id": 7},
              {"ip": 1, "app": 2, "device": 3, "os": 4, "channel": 5, "click_time": "2017-11-09 10:00:01"}]
    r = client.post("/v1/events", json={"predictions": [0.25, 0.5]}, headers={"ce-id": "e1", "ce-type": RESPONSE_TYPE})
    assert r.get_json() == {"paired": False}
    r = client.post("/v1/events", json={"instances": clicks}, headers={"ce-id": "e1", "ce-type": REQUEST_TYPE})
    assert r.get_json() == {"paired": True}
    assert client.post("/v1/events", json={}, headers={"ce-id": "e2"}).status_code == 400
    assert client.post("/v1/events", json={"x": 1}, headers={"ce-id": "e3", "ce-type": "other"}).status_code == 400
    client.post("/v1/events", json={"predictions": [0.1]}, headers={"ce-id": "e4", "ce-type": RESPONSE_TYPE})
    bad = client.post("/v1/events", json={"instances": [{"ip": "x"}]}, headers={"ce-id": "e4", "ce-type": REQUEST_TYPE})
    assert bad.status_code == 400
    monitor.close()
    rows = read_predictions(str(tmp_path / "log")).to_pandas()
    assert rows["probability"].tolist() == [0.25, 0.5] and rows["click_id"].iloc[0] == "7"
    assert rows["click_id"].iloc[1].startswith("m-") and set(rows["model_id"]) == {"isvc"}


# ---- acceptance: the real sample through a real predictor, then both monitors ----------------------------------
@pytest.mark.slow
def test_acceptance_replay_sigterm_batch_and_service_agree(serving_model_dir, sample_clicks, tmp_path):
    ordered = replay_order(sample_clicks)
    clicks = click_dicts(ordered)
    for c, rid in zip(clicks, ordered["row_id"].tolist()):
        c["click_id"] = rid
    logdir = tmp_path / "predictions"
    port = free_port()
    server = Proc([sys.executable, "-m", "serving", f"--model_dir={serving_model_dir}", f"--http_port={port}",
                   "--state=memory", "--max_batch=1000", "--enable_grpc=false", "--enable_latency_logging=false",
                   f"--prediction_log={logdir}"], tmp_path / "kserve.log")
    url = f"http://127.0.0.1:{port}"
    served = np.empty(len(clicks))
    try:
        server.wait_ready(url + "/v2/health/ready")
        for i in range(0, len(clicks), 1000):
            r = requests.post(url + "/v1/models/attribution:predict", json={"instances": clicks[i:i + 1000]}, timeout=60)
            assert r.status_code == 200, r.text
            body = r.json()
            assert "click_ids" not in body  # every click came with its id: nothing made, nothing to return
            served[i:i + 1000] = body["predictions"]
        made = requests.post(url + "/v1/models/attribution:predict",
                             json={"instances": [{k: v for k, v in clicks[0].items() if k != "click_id"}]}).json()
        assert made["click_ids"][0].startswith("m-")
        one = {k: v for k, v in clicks[1].items() if k != "click_id"}
        v2 = requests.post(url + "/v2/models/attribution/infer", json={"inputs": [
            {"name": k, "shape": [1], "datatype": "BYTES" if k == "click_time" else "INT64", "data": [v]}
            for k, v in one.items()]}).json()
        assert [o["name"] for o in v2["outputs"]] == ["probability", "click_id"]
        assert v2["outputs"][1]["data"][0].startswith("m-") and v2["outputs"][1]["data"][0] != made["click_ids"][0]
        text = requests.get(url + "/metrics").text
        assert metric(text, "attribution_prediction_log_dropped_clicks_total") == 0
    finally:
        assert server.sigterm() == 0  # the files are written on SIGTERM, not lost with the buffer
    logged = read_predictions(str(logdir)).to_pandas()
    assert len(logged) == len(clicks) + 2 and not list(logdir.glob("_*"))
    by_id = logged.set_index("click_id")["probability"]
    np.testing.assert_array_equal(by_id.loc[[str(c["click_id"]) for c in clicks]].to_numpy(), served)

    # postbacks: every positive, 50 of them twice, and 10 click_ids nobody served
    y = ordered["is_attributed"].to_numpy()
    pos = ordered[y == 1]
    attributed = pd.to_datetime(sample_clicks.set_index("row_id").loc[pos["row_id"], "attributed_time"]).dt.strftime(
        "%Y-%m-%d %H:%M:%S").tolist()
    items = [{"click_id": int(r), "attributed_time": a} for r, a in zip(pos["row_id"], attributed)]
    items += items[:50] + [{"click_id": 10_000_000 + k, "attributed_time": attributed[0]} for k in range(10)]
    postbacks = tmp_path / "postbacks.csv"
    pd.DataFrame(items).to_csv(postbacks, index=False)
    as_of = time.time()
    out = tmp_path / "live"
    subprocess.run([sys.executable, "-m", "attribution.cli", "monitor", "--predictions", str(logdir), "--attributions",
                    str(postbacks), "--output", str(out), "--as-of", repr(as_of), "--reference", str(serving_model_dir)],
                   cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True)
    live = json.loads((out / "live_metrics.json").read_text())
    offline = roc_auc_score(y, served)
    assert abs(live["roc_auc"] - offline) < 1e-6
    assert (live["clicks"], live["labelled"], live["positives"]) == (len(clicks) + 2, len(clicks) + 2, int(y.sum()))
    assert (live["duplicates"], live["unknown_click_ids"]) == (50, 10)
    assert all("psi" in row for row in live["hourly"]) and (out / "live_report.html").stat().st_size > 1000

    mport = free_port()
    monitor = Proc([sys.executable, "-m", "attribution.cli", "monitor", "--serve", "--predictions", str(logdir),
                    "--port", str(mport), "--reference", str(serving_model_dir)], tmp_path / "monitor.log")
    murl = f"http://127.0.0.1:{mport}"
    try:
        monitor.wait_ready(murl + "/healthz")
        for i in range(0, len(items), 100):
            r = requests.post(murl + "/v1/attributions", json=items[i:i + 100], timeout=30)
            assert r.status_code == 200, r.text
        over_http = requests.get(murl + "/v1/metrics", params={"as_of": repr(as_of)}, timeout=120).json()
        text = requests.get(murl + "/metrics", timeout=120).text
    finally:
        monitor.sigterm()
    assert over_http == live
    assert metric(text, "attribution_postback_duplicates_total") == 50
    assert 'attribution_drift_psi{feature="app"' in text


@pytest.mark.slow
def test_flask_server_writes_its_log_on_sigterm(serving_model_dir, sample_clicks, tmp_path):
    clicks = click_dicts(replay_order(sample_clicks).head(300))
    port, logdir = free_port(), tmp_path / "flask-log"
    code = (f"from serving.flask_app import run_gunicorn; run_gunicorn({str(serving_model_dir)!r}, {port}, 'memory', 1, "
            f"host='127.0.0.1', prediction_log={str(logdir)!r})")
    server = Proc([sys.executable, "-c", code], tmp_path / "flask.log")
    try:
        server.wait_ready(f"http://127.0.0.1:{port}/healthz")
        r = requests.post(f"http://127.0.0.1:{port}/predict", json={"clicks": clicks}, timeout=60).json()
    finally:
        server.sigterm()
    assert len(r["click_ids"]) == 300 and all(c.startswith("m-") for c in r["click_ids"])
    logged = read_predictions(str(logdir)).to_pandas().set_index("click_id")
    np.testing.assert_array_equal(logged.loc[r["click_ids"], "probability"].to_numpy(), r["probabilities"])


def test_training_writes_the_reference_the_monitor_reads(serving_model_dir):
    from attribution.monitoring.drift import read_reference
    from attribution.monitoring.prediction_log import model_id

    ref = read_reference(serving_model_dir)
    assert ref["model_id"] == model_id(serving_model_dir)
    assert set(ref["histograms"]) == {"app", "device", "os", "channel", "score"}
    for hist in ref["histograms"].values():
        assert sum(hist["fractions"]) == pytest.approx(1.0)
