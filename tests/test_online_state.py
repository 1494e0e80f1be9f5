"""Online state semantics: retries, eviction, late clicks, batches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attribution.features.online.state import Click, MemoryStore
from attribution.features.spec import (
    DEFAULT_SPEC,
    Band,
    ClickCount,
    DistinctCount,
    FeatureSpec,
    SincePrevious,
)

T = 1_510_000_000


def click(t: int, ip: int = 1, app: int = 3, cid: str | None = None) -> Click:
    return Click(ip=ip, app=app, device=1, os=13, channel=100, click_time=t, click_id=cid)


def feature(row: np.ndarray, name: str) -> float:
    return row[DEFAULT_SPEC.feature_names.index(name)]


def test_retried_click_id_is_not_counted_twice():
    online = MemoryStore()
    online.score([click(T, cid="a")])
    online.score([click(T, cid="a")])  # retry
    probe = online.score([click(T + 10)])[0]
    assert feature(probe, "clicks_ip_1s_300s") == 1
    assert online.stats().duplicate_clicks == 1


def test_clicks_without_id_are_all_counted():
    online = MemoryStore()
    online.score([click(T), click(T)])
    assert feature(online.score([click(T + 1)])[0], "clicks_ip_1s_300s") == 2


def test_retry_scores_the_same_as_first_try():
    online = MemoryStore()
    online.score([click(T - 50)])
    first = online.score([click(T, cid="x")])
    again = online.score([click(T, cid="x")])
    np.testing.assert_array_equal(first, again)


def test_late_click_is_placed_by_its_time():
    online = MemoryStore()
    online.score([click(T + 100)])
    online.score([click(T)])  # arrives after a later click
    probe = online.score([click(T + 200)])[0]
    assert feature(probe, "clicks_ip_1s_300s") == 2
    assert feature(probe, "secs_since_prev_ip") == 100


def test_batch_order_does_not_matter():
    a = MemoryStore().score([click(T), click(T + 5), click(T + 9, app=4)])
    b = MemoryStore().score([click(T + 9, app=4), click(T + 5), click(T)])
    np.testing.assert_array_equal(a, b[::-1])


SMALL = FeatureSpec(
    counts=(ClickCount(("ip",), (Band(1, 60),)),),
    distincts=(DistinctCount(("ip",), "app", 60),),
    since_previous=(SincePrevious(("ip", "app"), 60),),
)


@pytest.mark.parametrize("incremental_from", [64, 0])
def test_memory_plateaus_while_replaying_days(incremental_from):
    """Several days of traffic through a 60 s window: stored events track the window, not the stream."""
    from attribution.features.online import kernel as k

    store = MemoryStore(SMALL, max_clock_skew=0, incremental_from=incremental_from)  # retention = the 60 s window
    online = store
    rng = np.random.default_rng(0)
    sizes = []
    counted = 0  # the most values the counted windows held at once
    for day in range(3):
        t = T + day * 86_400 + np.sort(rng.integers(0, 86_400, 20_000))
        for i, ti in enumerate(t):
            online.score([click(int(ti), ip=int(rng.integers(0, 500)), app=int(rng.integers(0, 20)), cid=f"{day}-{i}")])
            counted = max(counted, int(store._state.scalars[k.N_COUNTS]))
        sizes.append((store.stats().events, len(store.seen_ids), store.stats().keys,
                      int(store._state.scalars[k.N_COUNTS])))
    events = [s[0] for s in sizes]
    # ~0.23 clicks/s over a 60 s window: a few dozen events per group, whatever the day
    assert max(events) < 200, sizes
    assert max(s[1] for s in sizes) < 200, "click ids are evicted with the window too"
    assert max(s[2] for s in sizes) < 400, "keys with no recent clicks leave memory"
    assert max(s[3] for s in sizes) <= max(events), "counted windows leave memory with their keys"
    assert (counted > 0) == (incremental_from == 0), "counted windows are used when asked for, else not at all"


@pytest.mark.parametrize("incremental_from", [64, 0])  # 0: every distinct count follows its window
def test_out_of_order_arrivals_match_the_sql_over_what_has_arrived(incremental_from):
    """Each click, whenever it arrives, gets exactly the features of the clicks received so far (late
    clicks are inserted inside a key's history, which also grows and slides its arrays)."""
    from attribution.features.compute import compute_features
    from attribution.features.online import state as online_mod
    from tests.conftest import tricky_stream

    clicks = tricky_stream(250, seed=11).drop(columns="row_id")
    clicks["click_time"] = clicks["click_time"] - clicks["click_time"].min() + T  # within one 8 h window or so
    online = MemoryStore(allowed_lateness=10**6, incremental_from=incremental_from)
    events = online_mod.clicks_from_frame(clicks)
    for i, event in enumerate(events):
        got = online.score([event])[0]
        want = compute_features(clicks.iloc[: i + 1].reset_index(drop=True), "vectorized").iloc[i]
        np.testing.assert_array_equal(got, want[DEFAULT_SPEC.feature_names].to_numpy(dtype=float), err_msg=f"arrival {i}")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), min_size=1, max_size=300))
def test_key_index_finds_every_live_key_after_any_adds_and_drops(ops: list[tuple[bool, int]]):
    """The open-addressing index against a dict: keys 0..40 in a 64-bucket table, with a hash that sends
    them all to a few buckets so that probe runs wrap and backward-shift deletion is exercised."""
    from attribution.features.online import kernel as k

    buckets = np.zeros((64, 2), np.int64)
    meta = np.zeros((41, k.META_COLUMNS), np.int64)
    live: dict[int, int] = {}
    for add, key in ops:
        h = 60 + key % 3  # three homes near the end of the table: runs wrap around to bucket 0
        if add and key not in live:
            meta[key, k.GROUP], meta[key, k.KEY0], meta[key, k.HASH] = 0, key, h
            k._place(buckets, h, key)
            live[key] = h
        elif not add and key in live:
            k._unplace(buckets, live.pop(key), key)
        for other in range(41):
            found = k._find(meta, buckets, (0, other, 0, 0, 0, 0), 60 + other % 3)
            assert found == (other if other in live else -1), (other, live)
    assert int((buckets[:, 0] > 0).sum()) == len(live)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 6)), max_size=300))
def test_window_counts_match_a_counter(ops: list[tuple[bool, int, int]]):
    """The per-value counts of counted windows against collections.Counter, from an 8-bucket table that
    must grow, with few tags and values so that probe runs collide and wrap."""
    from collections import Counter

    from numba.typed import List

    from attribution.features.online import kernel as k

    tables = List([np.zeros((1, 1), np.int64) for _ in range(k.COUNTS)] + [np.zeros((8, 3), np.int64)])
    sc = np.zeros(k.N_SCALARS, np.int64)
    model: Counter = Counter()
    for add, tag, value in ops:
        if add:
            assert k._count_add(tables, sc, tag, value) == (model[(tag, value)] == 0)
            model[(tag, value)] += 1
        elif model[(tag, value)]:
            model[(tag, value)] -= 1
            assert k._count_remove(tables, sc, tag, value) == (model[(tag, value)] == 0)
    held = {(int(r[0]) - 1, int(r[1])): int(r[2]) for r in tables[k.COUNTS] if r[0]}
    assert held == {key: n for key, n in model.items() if n}
    assert sc[k.N_COUNTS] == len(held)
