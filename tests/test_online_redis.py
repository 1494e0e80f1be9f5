"""The Redis store against the batch engines and the in-process store, on a real redis-server: the real sample,
adversarial streams (a busy key, late and out-of-order clicks, retries) and hypothesis streams, with busy keys
read through their counted windows (small_key=1) as well as whole; and with the families beyond the ip (key
groups without ip, kept as hot keys; a 24 h horizon)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attribution.features.compute import compute_features
from attribution.features.online.redis import RedisStore
from attribution.features.online.state import MemoryStore
from attribution.features.spec import DEFAULT_SPEC, FeatureSpec, spec_with
from tests.redis_fixture import RedisServer

pytestmark = pytest.mark.redis
NAMES = DEFAULT_SPEC.feature_names
WIDE = spec_with("campaign", "ip_day")  # 5 hot key groups (app, channel, ..) with distinct ips; ip groups over 24 h
T = 1_510_000_000
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield srv
    srv.stop()


def redis_store(server: RedisServer, **kw) -> RedisStore:
    return RedisStore(server.url, prefix=f"{{t{next(_prefixes)}}}:", **kw)


def replay(store, ids: np.ndarray, t: np.ndarray, cids: list[str | None] | None, batch: int) -> np.ndarray:
    return np.vstack([store.score_arrays(ids[i : i + batch], t[i : i + batch], None if cids is None else cids[i : i + batch])
                      for i in range(0, len(t), batch)])


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_array_equal(a, b)  # NaN == NaN here, exact otherwise


@pytest.mark.parametrize("small_key,rows", [(48, 100_000), (1, 15_000)])
def test_real_sample_equals_the_batch_engine(server, sample_clicks, small_key, rows):
    """The whole sample as served; its first 15k clicks (in time) with every key counted (small_key=1)."""
    sample_clicks = sample_clicks.sort_values(["click_time", "row_id"], kind="stable").head(rows)
    ordered = sample_clicks
    cols = ordered[["ip", "app", "device", "os", "channel", "click_time"]].to_numpy(np.int64)
    got = replay(redis_store(server, small_key=small_key), cols[:, :5], cols[:, 5], None, 1000)
    want = compute_features(sample_clicks, "vectorized").set_index("row_id").loc[ordered["row_id"].to_numpy(), NAMES]
    assert want["clicks_ip_3601s_28800s"].max() > 20  # busy keys are there to be counted
    assert_same(got, want.to_numpy(np.float64))


def test_busy_ip_counted_windows_equal_the_batch_engine(server):
    """One ip with 3,000 clicks over 9 h (windows slide, values come and go) among quieter ips."""
    rng = np.random.default_rng(3)
    n = 4000
    frame = pd.DataFrame({
        "row_id": np.arange(n), "ip": np.where(rng.random(n) < 0.75, 5348, rng.integers(1, 50, n)),
        "app": rng.integers(1, 30, n), "device": rng.integers(1, 4, n), "os": rng.integers(1, 20, n),
        "channel": rng.integers(100, 140, n), "click_time": T + np.sort(rng.integers(0, 9 * 3600, n)),
    })
    cols = frame[["ip", "app", "device", "os", "channel", "click_time"]].to_numpy(np.int64)
    want = compute_features(frame, "vectorized").set_index("row_id").loc[frame["row_id"], NAMES].to_numpy(np.float64)
    for batch in (1, 250):
        assert_same(replay(redis_store(server), cols[:, :5], cols[:, 5], None, batch), want)


@st.composite
def streams(draw, max_gap: int = 900):
    """Clicks of few keys, out of order by up to ~2x the allowed lateness, some retried (same id)."""
    n = draw(st.integers(1, 120))
    lateness = draw(st.sampled_from([0, 30, 400]))
    gaps = draw(st.lists(st.integers(0, max_gap), min_size=n, max_size=n))
    jitter = draw(st.lists(st.integers(0, 2 * lateness + 30), min_size=n, max_size=n))
    t = T + np.cumsum(gaps) - np.array(jitter)
    ids = np.array(draw(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 2),
                                           st.integers(1, 3)), min_size=n, max_size=n)), np.int64)
    cids = [draw(st.one_of(st.none(), st.integers(0, n // 2).map(str))) for _ in range(n)]
    batch = draw(st.sampled_from([1, 7, 50]))
    return ids, t.astype(np.int64), cids, lateness, batch


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(streams(), st.sampled_from([48, 1]))
def test_hypothesis_streams_equal_the_memory_store(server, stream, small_key):
    """Late clicks (scored from the retained window, not recorded), retries and disorder: the same features,
    late and duplicate counts in Redis as in memory."""
    ids, t, cids, lateness, batch = stream
    mem = MemoryStore(max_clock_skew=60, allowed_lateness=lateness, incremental_from=0)
    red = redis_store(server, max_clock_skew=60, allowed_lateness=lateness, small_key=small_key)
    assert_same(replay(mem, ids, t, cids, batch), replay(red, ids, t, cids, batch))
    a, b = mem.stats(), red.stats()
    assert (a.late_events, a.duplicate_clicks) == (b.late_events, b.duplicate_clicks)


@pytest.mark.parametrize("spec,small_key,rows", [(WIDE, 48, 40_000), (WIDE, 1, 6_000), (spec_with("ip_day"), 48, 40_000)],
                         ids=["hot-keys", "hot-keys-all-counted", "ip_day-alone"])
def test_real_sample_with_hot_keys_equals_the_memory_store(server, sample_clicks, spec, small_key, rows):
    """The families beyond the ip on the real sample: its first 40k clicks in time (33 h, so the 24 h windows
    slide), hot keys read whole while small and then through their counted windows; its first 6k with every
    key counted; and ip_day alone (every group with ip, a 24 h horizon: no hot keys)."""
    ordered = sample_clicks.sort_values(["click_time", "row_id"], kind="stable").head(rows)
    cols = ordered[["ip", "app", "device", "os", "channel", "click_time"]].to_numpy(np.int64)
    got = replay(redis_store(server, spec=spec, small_key=small_key), cols[:, :5], cols[:, 5], None, 1000)
    want = replay(MemoryStore(spec, incremental_from=0), cols[:, :5], cols[:, 5], None, 1000)
    names = spec.feature_names
    if "distinct_ip_per_app_86400s" in names:
        assert want[:, names.index("distinct_ip_per_app_86400s")].max() > 500  # real reach: hot keys are counted
    if rows > 6_000:
        assert (want[:, names.index("clicks_ip_28801s_86400s")] > 0).any()  # ip_day: the ip's clicks 8-24 h back
    assert_same(got, want)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(streams(), streams(max_gap=3000)), st.sampled_from([48, 5, 1]))
def test_hypothesis_streams_with_hot_keys_equal_the_memory_store(server, stream, small_key):
    """The families beyond the ip: apps, channels, (app, os).. of the few values drawn are hot keys every click
    reads and writes; clicks late, retried and out of order, ips turning busy (small_key 5) while the hot keys
    stay sets, streams over a day or longer (max_gap 3000 s) so the 24 h windows slide."""
    ids, t, cids, lateness, batch = stream
    mem = MemoryStore(WIDE, max_clock_skew=60, allowed_lateness=lateness, incremental_from=0)
    red = redis_store(server, spec=WIDE, max_clock_skew=60, allowed_lateness=lateness, small_key=small_key)
    assert_same(replay(mem, ids, t, cids, batch), replay(red, ids, t, cids, batch))
    a, b = mem.stats(), red.stats()
    assert (a.late_events, a.duplicate_clicks) == (b.late_events, b.duplicate_clicks)


def test_quiet_hot_keys_are_swept_by_event_time(server):
    """An app's and a channel's keys, quiet for longer than the 24 h retention, are deleted by the stale sweep
    while the stream goes on elsewhere; the features stay the memory store's."""
    rng = np.random.default_rng(4)
    n = 600
    ids = np.column_stack([rng.integers(1, 40, n), rng.integers(1, 6, n), rng.integers(1, 3, n), rng.integers(1, 4, n),
                           rng.integers(100, 104, n)]).astype(np.int64)
    t = T + np.sort(rng.integers(0, 2 * 3600, n))
    ids[n // 2 :, 1] += 100  # from the middle on, other apps and channels: the first ones go quiet
    ids[n // 2 :, 4] += 100
    t[n // 2 :] += 2 * 86400  # two days later
    red, mem = redis_store(server, spec=WIDE), MemoryStore(WIDE, incremental_from=0)
    assert_same(replay(red, ids, t, None, 20), replay(mem, ids, t, None, 20))
    hot = [j for j, g in enumerate(WIDE.key_groups) if g in (("app",), ("channel",))]
    left = {k.decode() for j in hot for k in server_client(server).scan_iter(match=f"{red.prefix}[ew]:{j}:*")}
    assert left, "the new apps' and channels' keys are there"
    assert all(int(k.rsplit(":", 1)[1]) >= 100 for k in left), f"quiet keys not swept: {sorted(left)[:5]}"


def test_in_order_replay_equals_batch_scoring_whatever_the_lateness(server):
    """With clicks in order, lateness and skew change what is kept, never the features."""
    from tests.conftest import tricky_stream

    clicks = tricky_stream(1200, seed=5)
    ordered = clicks.sort_values(["click_time", "row_id"], kind="stable")
    cols = ordered[["ip", "app", "device", "os", "channel", "click_time"]].to_numpy(np.int64)
    want = compute_features(clicks, "vectorized").set_index("row_id").loc[ordered["row_id"], NAMES].to_numpy(np.float64)
    for skew, lateness in ((0, 0), (300, 3600)):
        assert_same(replay(redis_store(server, max_clock_skew=skew, allowed_lateness=lateness), cols[:, :5], cols[:, 5],
                           None, 100), want)


@pytest.mark.parametrize("spec", [DEFAULT_SPEC, WIDE], ids=["seed", "hot-keys"])
def test_replicas_turning_an_ip_busy_equal_the_memory_store(server, spec: FeatureSpec):
    """Two stores on one Redis take turns with a stream whose ips grow from packed to busy: a store that has not
    yet seen an ip turn busy (or whose request meets one turning) is told which keys to declare, wrote nothing
    the first time, and both give the memory store's features (with hot keys too: a turning ip's clicks move
    into its ip groups' sets only, the hot keys' sets hold them already)."""
    rng = np.random.default_rng(11)
    n = 1500
    ids = np.column_stack([rng.integers(1, 4, n), rng.integers(1, 9, n), rng.integers(1, 3, n), rng.integers(1, 5, n),
                           rng.integers(100, 106, n)]).astype(np.int64)
    t = (T + np.sort(rng.integers(0, 10 * 3600, n))).astype(np.int64)
    prefix = f"{{t{next(_prefixes)}}}:"
    a, b = (RedisStore(server.url, spec, prefix=prefix, small_key=20) for _ in range(2))
    mem = MemoryStore(spec, incremental_from=0)
    sizes = [1, 9, 40, 3]
    got, want, i, k = [], [], 0, 0
    while i < n:
        m = sizes[k % len(sizes)]
        got.append((a if k % 2 else b).score_arrays(ids[i : i + m], t[i : i + m]))
        want.append(mem.score_arrays(ids[i : i + m], t[i : i + m]))
        i, k = i + m, k + 1
    assert_same(np.vstack(got), np.vstack(want))
    assert a._busy and b._busy, "both stores learnt of busy ips from the script"
    assert int(server_client(server).hget(prefix + "meta", "seq")) == n, "every click recorded once, retries included"


def server_client(server: RedisServer):
    import redis

    return redis.Redis.from_url(server.url)


def test_ids_outside_the_packed_ranges_are_refused_naming_row_and_field(server):
    store = redis_store(server)
    ids = np.array([[1, 2, 3, 4, 5], [1, 70_000, 3, 4, 5]], np.int64)
    with pytest.raises(ValueError, match=r"row 1: app 70000 is outside \[0, 65536\)"):
        store.score_arrays(ids, np.array([T, T], np.int64))
    with pytest.raises(ValueError, match=r"row 0: click_time -1"):
        store.score_arrays(ids[:1], np.array([-1], np.int64))
    assert store.watermark is None, "nothing was recorded"
