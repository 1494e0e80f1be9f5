"""Issue 14's acceptance, on real processes (redis-server, the KServe predictor): a forged clock cannot change
a replay, Redis at maxmemory gives 503s and recovers, Redis killed with SIGKILL and restarted from its AOF loses
at most the fsync window, and a warm restart continues a replay exactly."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import redis
import requests

from attribution.features.online.redis import RedisStore, default_prefix
from attribution.features.online.warm import warm_start
from attribution.features.spec import DEFAULT_SPEC
from attribution.io import write_clicks
from tests.redis_fixture import RedisServer, ServerProcess, click_dicts, replay_order, scraped_metric

pytestmark = pytest.mark.redis
V1 = "/v1/models/attribution:predict"
BATCH = 500


def _post_all(srv: ServerProcess, clicks: list[dict], session: requests.Session) -> list[float]:
    got: list[float] = []
    for i in range(0, len(clicks), BATCH):
        r = session.post(srv.base + V1, json={"instances": clicks[i : i + BATCH]}, timeout=60)
        assert r.status_code == 200, r.text
        got.extend(r.json()["predictions"])
    return got


def test_forged_clock_replay_equals_batch_scoring(serving_model_dir, sample_clicks, expected_sample_probabilities, tmp_path):
    """The sample replayed (stream clock) with a click dated 10 h ahead sent midway, as a client on UTC+8 local
    time would: it gets a 400 naming click_time, and every other click scores as batch scoring does."""
    srv = ServerProcess("kserve", serving_model_dir, "memory", tmp_path, extra=("--clock=stream",)).wait_ready()
    try:
        ordered = replay_order(sample_clicks)
        clicks = click_dicts(ordered)
        half = len(clicks) // 2
        s = requests.Session()
        got = _post_all(srv, clicks[:half], s)
        forged = {**clicks[half], "ip": 999_999 % 364_779, "click_time": int(ordered["click_time"].iloc[half]) + 10 * 3600}
        r = s.post(srv.base + V1, json={"instances": [forged]}, timeout=30)
        assert r.status_code == 400 and "click_time" in r.text and "max-clock-skew" in r.text, r.text
        got += _post_all(srv, clicks[half:], s)
        np.testing.assert_allclose(np.asarray(got), expected_sample_probabilities[ordered["row_id"].to_numpy()], rtol=0, atol=1e-6)
        assert scraped_metric(srv.base, "attribution_state_late_events") == 0
    finally:
        srv.stop()


def test_redis_at_maxmemory_gives_503_naming_the_cause_then_recovers(serving_model_dir, tmp_path):
    server = RedisServer(tmp_path, args=("--maxmemory", "4mb", "--maxmemory-policy", "noeviction")).start()
    srv = ServerProcess("kserve", serving_model_dir, server.url, tmp_path, extra=("--clock=stream",)).wait_ready()
    try:
        s = requests.Session()
        rng = np.random.default_rng(0)
        statuses = []
        for k in range(200):  # distinct keys until Redis refuses writes
            batch = [{"ip": int(ip), "app": int(a), "device": 1, "os": 13, "channel": 100, "click_time": 1_510_000_000 + k}
                     for ip, a in zip(rng.integers(0, 300_000, BATCH), rng.integers(0, 700, BATCH))]
            r = s.post(srv.base + V1, json={"instances": batch}, timeout=60)
            statuses.append(r.status_code)
            if r.status_code == 503:
                assert "maxmemory" in r.text and "nothing was recorded" in r.text, r.text
                break
            assert r.status_code == 200, r.text
        assert statuses[-1] == 503 and statuses.count(200) > 0, statuses
        meta = default_prefix(DEFAULT_SPEC) + "meta"
        before = redis.Redis.from_url(server.url).hget(meta, "seq")
        assert before is not None and int(before) > 0  # the clicks recorded before maxmemory are counted here
        assert s.post(srv.base + V1, json={"instances": batch}, timeout=60).status_code == 503
        assert redis.Redis.from_url(server.url).hget(meta, "seq") == before  # no partial write
        redis.Redis.from_url(server.url).config_set("maxmemory", "0")  # memory frees (more memory, or clicks evicted)
        r = s.post(srv.base + V1, json={"instances": batch}, timeout=60)
        assert r.status_code == 200, r.text
    finally:
        srv.stop()
        server.stop()


def test_sigkill_and_aof_restart_lose_at_most_the_fsync_window(sample_clicks, tmp_path):
    """Clicks (with ids) stream into Redis with appendfsync everysec; Redis is killed with SIGKILL mid-stream
    and restarted from its AOF: every click acknowledged more than the fsync window before the kill is there."""
    server = RedisServer(tmp_path, args=("--appendonly", "yes", "--appendfsync", "everysec")).start()
    ordered = replay_order(sample_clicks)
    cols = ordered[["ip", "app", "device", "os", "channel", "click_time"]].to_numpy(np.int64)
    cids = ordered["row_id"].astype(str).tolist()
    store = RedisStore(server.url, max_clock_skew=300, allowed_lateness=10**6)  # nothing leaves: loss is visible
    acked: list[tuple[float, int, int]] = []  # (ack time, first row, end row)
    killed_at: list[float] = []

    def kill_later() -> None:
        time.sleep(3.0)
        killed_at.append(time.monotonic())
        server.stop()  # SIGKILL

    killer = threading.Thread(target=kill_later)
    killer.start()
    i = 0
    try:
        while i < len(cols):
            store.score_arrays(cols[i : i + 100, :5], cols[i : i + 100, 5], cids[i : i + 100])
            acked.append((time.monotonic(), i, min(i + 100, len(cols))))
            i += 100
    except Exception as err:  # noqa: BLE001 - the kill interrupts the stream, as it would a predictor's
        interrupted = repr(err)  # noqa: F841 - kept for a debugger; the asserts below judge the stream
    killer.join()
    assert killed_at and acked, "the stream must still be running when Redis is killed"
    server.start()
    kept = redis.Redis.from_url(server.url)
    present = set(kept.zrange(store.ids, 0, -1))
    lost = [(t, a, b) for t, a, b in acked if not all(cids[r].encode() in present for r in range(a, b))]
    window = killed_at[0] - min((t for t, _, _ in lost), default=killed_at[0])
    print(f"acked {acked[-1][2]} clicks before SIGKILL; lost {sum(b - a for _, a, b in lost)} acknowledged clicks, "
          f"acknowledged within {window:.2f} s of the kill")
    assert window <= 2.0, "more than the fsync window (1 s, up to 2 s when a fsync is late) was lost"
    assert acked[-1][2] - sum(b - a for _, a, b in lost) > 0 and len(present) > 0
    server.stop()


def test_warm_restart_equals_the_uninterrupted_run(serving_model_dir, sample_clicks, expected_sample_probabilities, tmp_path):
    """A predictor (memory state) stops mid-replay; a new one warms from the click log so far and the rest of
    the replay scores exactly as batch scoring (the uninterrupted run) does."""
    ordered = replay_order(sample_clicks)
    clicks = click_dicts(ordered)
    cut = 60_000
    s = requests.Session()
    first = ServerProcess("kserve", serving_model_dir, "memory", tmp_path, extra=("--clock=stream",)).wait_ready()
    try:
        _post_all(first, clicks[:cut], s)
    finally:
        first.stop()
    log = write_clicks(ordered.iloc[:cut][["ip", "app", "device", "os", "channel", "click_time"]], tmp_path / "log.parquet")
    second = ServerProcess("kserve", serving_model_dir, "memory", tmp_path,
                           extra=("--clock=stream", f"--warm-from={log}")).wait_ready()
    try:
        held = scraped_metric(second.base, "attribution_state_events")
        assert held > 0, "ready only once warm: the state holds the log's last window"
        got = _post_all(second, clicks[cut:], s)
        want = expected_sample_probabilities[ordered["row_id"].to_numpy()[cut:]]
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-6)
    finally:
        second.stop()


def test_one_replica_warms_redis_and_the_others_wait(sample_clicks, tmp_path):
    server = RedisServer(tmp_path).start()
    try:
        ordered = replay_order(sample_clicks).iloc[:20_000]
        log = write_clicks(ordered[["ip", "app", "device", "os", "channel", "click_time"]], tmp_path / "log.parquet")
        stores = [RedisStore(server.url) for _ in range(3)]
        threads = [threading.Thread(target=warm_start, args=(st, str(log))) for st in stores]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        meta = redis.Redis.from_url(server.url).hgetall(stores[0].meta)
        held = ordered[ordered["click_time"] >= ordered["click_time"].max() - stores[0].retention]
        assert int(meta[b"seq"]) == len(held), "the log's last window was replayed exactly once"
        assert not redis.Redis.from_url(server.url).exists(stores[0].prefix + "warm-lock")
    finally:
        server.stop()
