"""The window edge is exact: w seconds earlier counts, w + 1 does not, the same second never does."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from attribution.features.compute import ENGINES
from attribution.features.compute import compute_features as _compute
from attribution.features.spec import DEFAULT_SPEC

T = 1_510_000_000
# "redis": the online engine over the Redis store, every key read through its counted windows (small_key=1)
ENGINES_HERE = [e for e in ENGINES if e != "spark"] + ["redis"]
_REDIS: list = []
_prefixes = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def _redis_server(tmp_path_factory):
    from tests.redis_fixture import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    _REDIS.append(server)
    yield
    _REDIS.clear()
    server.stop()


def compute_features(clicks: pd.DataFrame, engine: str) -> pd.DataFrame:
    if engine != "redis":
        return _compute(clicks, engine)
    from attribution.features.online.redis import RedisStore

    store = RedisStore(_REDIS[0].url, prefix=f"{{edges{next(_prefixes)}}}:", small_key=1)
    return _compute(clicks, "online", store=store)


def clicks_at(*offsets: int, ip: int = 7) -> pd.DataFrame:
    """Clicks of one (ip, app, device, os, channel) at T - offset each; the last row is the probe at T."""
    n = len(offsets) + 1
    return pd.DataFrame(
        {
            "row_id": np.arange(n, dtype=np.int64),
            "ip": np.full(n, ip, "uint32"),
            "app": np.full(n, 3, "uint16"),
            "device": np.ones(n, "uint16"),
            "os": np.full(n, 13, "uint16"),
            "channel": np.full(n, 100, "uint16"),
            "click_time": np.array([T - o for o in offsets] + [T], dtype=np.int64),
        }
    )


@pytest.mark.parametrize("engine", ENGINES_HERE)
@pytest.mark.parametrize("band", DEFAULT_SPEC.counts[0].bands, ids=lambda b: f"{b.start}-{b.end}")
def test_band_edges(engine, band):
    name = f"clicks_ip_{band.start}s_{band.end}s"
    inside = compute_features(clicks_at(band.end, band.start), engine).iloc[-1]
    assert inside[name] == 2, "clicks exactly `end` and `start` seconds earlier are in the band"
    outside = compute_features(clicks_at(band.end + 1, band.start - 1), engine).iloc[-1]
    expected = 0
    assert outside[name] == expected, "end+1 and start-1 seconds earlier are outside the band"


@pytest.mark.parametrize("engine", ENGINES_HERE)
def test_same_second_never_counts(engine):
    out = compute_features(clicks_at(0, 0, 0), engine)
    assert (out["clicks_ip_1s_300s"] == 0).all()
    assert out["secs_since_prev_ip"].isna().all()
    assert (out["distinct_app_per_ip_28800s"] == 0).all()


@pytest.mark.parametrize("engine", ENGINES_HERE)
def test_since_previous_and_distinct_window_edges(engine):
    w = 28800
    at_edge = compute_features(clicks_at(w), engine).iloc[-1]
    assert at_edge["secs_since_prev_ip"] == w
    assert at_edge["distinct_app_per_ip_28800s"] == 1
    past = compute_features(clicks_at(w + 1), engine).iloc[-1]
    assert np.isnan(past["secs_since_prev_ip"])
    assert past["distinct_app_per_ip_28800s"] == 0


@pytest.mark.parametrize("engine", ENGINES_HERE)
def test_other_keys_do_not_leak(engine):
    df = pd.concat([clicks_at(10).iloc[:1].assign(ip=np.uint32(8)), clicks_at().assign(row_id=1)], ignore_index=True)
    probe = compute_features(df, engine).iloc[-1]
    assert probe["clicks_ip_1s_300s"] == 0 and np.isnan(probe["secs_since_prev_ip"])
