"""Time clients cannot push: the reference clock refuses clicks too far ahead, a click within the skew moves
the state's clock without emptying anyone's window, and late clicks are treated as documented."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attribution.features.online.clock import ClockSkew, ReferenceClock
from attribution.features.online.state import MemoryStore
from attribution.features.spec import DEFAULT_SPEC

T = 1_510_000_000
NAMES = DEFAULT_SPEC.feature_names


def test_server_clock_refuses_a_click_past_the_skew_and_names_click_time():
    clock = ReferenceClock("server", max_skew=300)
    now = int(time.time())
    clock.admit(np.array([now - 86_400, now + 290]))
    with pytest.raises(ClockSkew, match="click_time .* ahead of the server clock") as err:
        clock.admit(np.array([now, now + 10 * 3600]))
    assert err.value.index == 1 and err.value.value == now + 10 * 3600


def test_stream_clock_refuses_forged_clicks_but_follows_a_genuine_jump():
    clock = ReferenceClock("stream", max_skew=300, window=51, quorum=3)
    for k in range(60):
        clock.admit(np.array([T + k]))
    for _ in range(2):  # two forged clicks in a row are still fewer than the quorum
        with pytest.raises(ClockSkew, match="stream clock"):
            clock.admit(np.array([T + 10 * 3600]))
    clock.admit(np.array([T + 61]))
    # a sparse stream: clicks minutes apart are followed, however few per window
    for k in range(1, 20):
        clock.admit(np.array([T + 61 + 250 * k]))
    # the stream resumes an hour later (a quiet spell): its first clicks wait for the quorum, then it is followed
    clock = ReferenceClock("stream", max_skew=300, window=51, quorum=3)
    clock.admit(np.arange(T, T + 100))
    refused = 0
    for k in range(10):
        try:
            clock.admit(np.array([T + 9000 + k]))
        except ClockSkew:
            refused += 1
    assert refused == 2
    # a request that is itself the stream (a replay's first batch after the quiet spell) is admitted whole
    clock.admit(np.arange(T + 20_000, T + 20_900, 3))


def _scored(stream: list[tuple[int, int, int]], late_ok: int) -> tuple[np.ndarray, np.ndarray]:
    """Features of each click (ip, app, second) sent one per request through a stream clock and a MemoryStore;
    rows of refused clicks are NaN. Also which clicks were refused."""
    clock = ReferenceClock("stream", max_skew=300)
    store = MemoryStore(max_clock_skew=300, allowed_lateness=late_ok)
    out = np.full((len(stream), len(NAMES)), np.nan)
    refused = np.zeros(len(stream), bool)
    for i, (ip, app, t) in enumerate(stream):
        try:
            clock.admit(np.array([t]))
        except ClockSkew:
            refused[i] = True
            continue
        out[i] = store.score_arrays(np.array([[ip, app, 1, 13, 100]]), np.array([t]))[0]
    return out, refused


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(0, 40)), min_size=5, max_size=120),
    st.integers(0, 119), st.one_of(st.integers(-400, 400), st.integers(-40 * 3600, 40 * 3600)), st.integers(0, 120),
)
def test_one_forged_click_never_changes_another_keys_features(steps, at, offset, lateness):
    """A genuine stream (time-ordered up to the allowed lateness) of ips 1-4, and the same stream with one
    click of ip 99 at any time (hours ahead or behind) injected after its first click (the stream clock
    admits a stream's first click unjudged): every genuine click scores the same."""
    t, genuine = T, []
    for ip, app, gap in steps:
        t += gap
        genuine.append((ip, app, t - (gap * 7) % (lateness + 1)))  # disorder within the allowed lateness
    at = 1 + at % len(genuine)
    forged = genuine[:at] + [(99, 1, genuine[min(at, len(genuine) - 1)][2] + offset)] + genuine[at:]
    clean, refused_clean = _scored(genuine, lateness)
    dirty, refused_dirty = _scored(forged, lateness)
    keep = np.ones(len(forged), bool)
    keep[at] = False
    np.testing.assert_array_equal(refused_dirty[keep], refused_clean)
    np.testing.assert_array_equal(dirty[keep], clean)


def test_late_click_is_scored_from_the_retained_window_and_not_recorded():
    store = MemoryStore(max_clock_skew=0, allowed_lateness=60)
    ids = np.array([[1, 3, 1, 13, 100]])
    for dt in (0, 10, 20):
        store.score_arrays(ids, np.array([T + dt]))
    store.score_arrays(np.array([[2, 3, 1, 13, 100]]), np.array([T + 29_000]))  # the stream moves on
    # 60 s late: still recorded in place
    store.score_arrays(ids, np.array([T + 29_000 - 60]))
    assert store.stats().late_events == 0
    # 61 s late: late; its 8 h window reaches back before T, but only clicks from wm - retention on count
    late = store.score_arrays(ids, np.array([T + 29_000 - 61]))[0]
    assert store.stats().late_events == 1
    assert late[NAMES.index("clicks_ip_3601s_28800s")] == 0  # T..T+20 lie before wm - retention = T+140
    assert late[NAMES.index("clicks_ip_1s_300s")] == 0
    probe = store.score_arrays(ids, np.array([T + 29_001]))[0]
    assert probe[NAMES.index("clicks_ip_1s_300s")] == 1  # the click 60 s late, not the one 61 s late
