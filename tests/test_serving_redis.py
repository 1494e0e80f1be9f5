"""Redis state under real servers: two predictor processes sharing one Redis score the sample exactly as
batch scoring does; killing Redis gives 503s and restarting it gives 200s without touching the predictors;
the Flask app with two gunicorn workers on Redis; the store itself against MemoryStore; bounded memory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import requests

from attribution.features.online.redis import RedisStore
from attribution.features.online.state import Click, MemoryStore, StateUnavailable
from attribution.features.spec import (
    DEFAULT_SPEC,
    Band,
    ClickCount,
    DistinctCount,
    FeatureSpec,
    SincePrevious,
)
from tests.conftest import tricky_stream
from tests.redis_fixture import (
    RedisServer,
    ServerProcess,
    click_dicts,
    metric,
    replay_order,
)

pytestmark = pytest.mark.redis
BATCH = 500
V1 = "/v1/models/attribution:predict"


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def two_predictors(serving_model_dir, shared_redis, tmp_path_factory):
    logs = tmp_path_factory.mktemp("kserve_redis")
    servers = [ServerProcess("kserve", serving_model_dir, shared_redis.url, logs) for _ in range(2)]
    try:
        yield [s.wait_ready() for s in servers]
    finally:
        for s in servers:
            s.stop()


# ---- the store itself ---------------------------------------------------------------------------------------
def _replay(store, clicks: pd.DataFrame, batch: int, ids: bool) -> np.ndarray:
    ordered = clicks.sort_values(["click_time", "row_id"], kind="stable")
    events = [Click(*map(int, r[:6]), click_id=str(r[6]) if ids else None)
              for r in ordered[["ip", "app", "device", "os", "channel", "click_time", "row_id"]].itertuples(index=False)]
    rows = [store.score(events[i : i + batch]) for i in range(0, len(events), batch)]
    out = np.vstack(rows)
    return out[np.argsort(ordered["row_id"].to_numpy(), kind="stable")]


@pytest.mark.parametrize("batch", [1, 37])
def test_redis_store_equals_memory_store_on_tricky_stream(redis_server, batch):
    """Same-second bursts, exact duplicates, with and without click ids; then a retried batch."""
    clicks = tricky_stream(1500)
    for ids in (False, True):
        mem = _replay(MemoryStore(DEFAULT_SPEC), clicks, batch, ids)
        red_store = RedisStore(redis_server.url, DEFAULT_SPEC, prefix=f"{{t{batch}{ids}}}:")
        red = _replay(red_store, clicks, batch, ids)
        np.testing.assert_array_equal(mem, red)
    recent = clicks.sort_values(["click_time", "row_id"], kind="stable").tail(50)
    again = _replay(red_store, recent, batch, True)  # retries of recent clicks: not recorded twice
    assert red_store.stats().duplicate_clicks == 50 and again.shape[0] == 50


SMALL = FeatureSpec(
    counts=(ClickCount(("ip",), (Band(1, 60),)),),
    distincts=(DistinctCount(("ip",), "app", 60),),
    since_previous=(SincePrevious(("ip", "app"), 60),),
)


def test_redis_state_plateaus(redis_server):
    """Three days through a 60 s window: what Redis holds tracks the window, not the stream."""
    store = RedisStore(redis_server.url, SMALL, max_clock_skew=0)  # retention = the 60 s window
    online = store
    rng = np.random.default_rng(0)
    sizes = []
    for day in range(3):
        t = 1_510_000_000 + day * 86_400 + np.sort(rng.integers(0, 86_400, 6_000))
        clicks = [Click(int(rng.integers(0, 300)), int(rng.integers(0, 20)), 1, 13, 100, int(ti), f"{day}-{i}")
                  for i, ti in enumerate(t)]
        for i in range(0, len(clicks), 50):
            online.score(clicks[i : i + 50])
        sizes.append(store.stats().events)
    assert max(sizes) < 300, sizes


def test_unreachable_redis_raises_state_unavailable(tmp_path):
    server = RedisServer(tmp_path)  # never started: nothing listens on its port
    store = RedisStore(server.url, DEFAULT_SPEC, connect_timeout=0.5)
    with pytest.raises(StateUnavailable, match="unavailable"):
        store.score([Click(1, 2, 3, 4, 5, 1_510_000_000)])
    with pytest.raises(StateUnavailable):
        store.ping()


# ---- two predictor processes, one Redis ---------------------------------------------------------------------
def test_two_predictors_sharing_redis_match_batch_scoring(two_predictors, sample_clicks, expected_sample_probabilities):
    """Batches alternate between the two processes; every click's features see the other's clicks."""
    ordered = replay_order(sample_clicks)
    clicks = click_dicts(ordered)
    sessions = [requests.Session() for _ in two_predictors]
    got = []
    for k, i in enumerate(range(0, len(clicks), BATCH)):
        srv, s = two_predictors[k % 2], sessions[k % 2]
        r = s.post(srv.base + V1, json={"instances": clicks[i : i + BATCH]}, timeout=60)
        assert r.status_code == 200, r.text
        got.extend(r.json()["predictions"])
    np.testing.assert_allclose(np.asarray(got), expected_sample_probabilities[ordered["row_id"].to_numpy()], rtol=0, atol=1e-6)
    text = requests.get(two_predictors[0].base + "/metrics", timeout=30).text
    assert metric(text, "attribution_state_events") > 0 and metric(text, "attribution_state_up") == 1


def test_redis_down_gives_503_and_recovers_without_restart(two_predictors, shared_redis):
    click = {"ip": 7, "app": 3, "device": 1, "os": 13, "channel": 100, "click_time": "2017-11-20 10:00:00"}
    a, b = two_predictors
    assert requests.post(a.base + V1, json={"instances": [click]}, timeout=30).status_code == 200
    shared_redis.stop()
    for srv in (a, b, a):
        r = requests.post(srv.base + V1, json={"instances": [click]}, timeout=30)
        assert r.status_code == 503, r.text
        assert "state unavailable" in r.json()["error"] and "Redis" in r.json()["error"]
    # a client mistake is still a 400 while Redis is down (validation comes first)
    assert requests.post(a.base + V1, json={"instances": [{**click, "ip": -1}]}, timeout=30).status_code == 400
    assert metric(requests.get(a.base + "/metrics", timeout=30).text, "attribution_state_errors_total") >= 2
    shared_redis.start()  # empty, as after a crash without persistence; the script must be reloaded
    for srv in (a, b):
        r = requests.post(srv.base + V1, json={"instances": [click]}, timeout=30)
        assert r.status_code == 200, r.text
    assert requests.get(a.base + "/v2/health/ready", timeout=10).status_code == 200


# ---- Flask under gunicorn, two workers, Redis ------------------------------------------------------------------
def test_flask_two_workers_on_redis_match_batch_scoring(serving_model_dir, sample_clicks, expected_sample_probabilities, tmp_path):
    redis = RedisServer(tmp_path).start()
    srv = ServerProcess("flask", serving_model_dir, redis.url, tmp_path, workers=2)
    try:
        srv.wait_ready()
        ordered = replay_order(sample_clicks)
        clicks = click_dicts(ordered)
        s = requests.Session()
        got = []
        for i in range(0, len(clicks), BATCH):
            r = s.post(srv.base + "/predict", json={"clicks": clicks[i : i + BATCH]}, timeout=60)
            assert r.status_code == 200, r.text
            got.extend(r.json()["probabilities"])
        np.testing.assert_allclose(np.asarray(got), expected_sample_probabilities[ordered["row_id"].to_numpy()], rtol=0, atol=1e-6)
        redis.stop()
        r = s.post(srv.base + "/predict", json={"clicks": clicks[:1]}, timeout=30)
        assert r.status_code == 503 and "unavailable" in r.json()["error"]
        assert requests.get(srv.base + "/healthz", timeout=10).status_code == 503
        redis.start()
        assert s.post(srv.base + "/predict", json={"clicks": clicks[:1]}, timeout=30).status_code == 200
    finally:
        srv.stop()
        redis.stop()
