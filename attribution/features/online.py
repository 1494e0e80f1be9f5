"""The online form of the spec: state that, fed clicks, returns for each click exactly what the SQL gives.

A store keeps, per key group and key, the recent clicks (second and the values that distinct counts need).
`OnlineFeatures.score` records a batch of clicks and then reads each click's features from the state; as
every feature only sees seconds strictly before the click's own, recording first is the same as reading
first, and a batch can hold several clicks of one key in any order. Retried clicks (same `click_id`) are
not recorded twice; clicks older than the largest window are evicted, so memory stays bounded; a click
that arrives late is placed by its time.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import operator
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sortedcontainers import SortedList

from attribution.features.spec import DEFAULT_SPEC, FeatureSpec

log = logging.getLogger(__name__)


@dataclass
class History:
    """One key's recent clicks, sorted by second; `values[f][i]` is field f of click i."""

    times: list[int] = field(default_factory=list)
    values: dict[str, list[int]] = field(default_factory=dict)
    # For keys with many clicks, MemoryStore also keeps a ValueIndex per distinct field, so a distinct
    # count is a few bisects rather than a set over every click in the window (NAT and bot IPs).
    by_value: dict[str, ValueIndex] | None = None


class ValueIndex:
    """One key's field values: value -> its seconds (sorted), and the values ordered by latest second.
    Distinct values in [since, t - 1] = values whose latest second lies there, plus the few whose latest
    second is t or later but have an earlier one in range. Seconds before `cutoff` are dropped when their
    value is seen again; a value not seen again stays, which only costs memory bounded by the id space."""

    __slots__ = ("latest", "secs")

    def __init__(self) -> None:
        self.secs: dict[int, list[int]] = {}
        self.latest = SortedList()

    def add(self, value: int, t: int, cutoff: int) -> None:
        secs = self.secs.get(value)
        if secs is None:
            self.secs[value] = [t]
            self.latest.add((t, value))
            return
        old = secs[-1]
        if secs[0] < cutoff:
            del secs[: bisect.bisect_left(secs, cutoff)]
        if not secs or secs[-1] <= t:
            secs.append(t)
        else:
            bisect.insort_right(secs, t)
        if secs[-1] != old:
            self.latest.remove((old, value))
            self.latest.add((secs[-1], value))

    def count(self, since: int, t: int) -> int:
        latest = self.latest
        hi = latest.bisect_left((t, -1))
        n = hi - latest.bisect_left((since, -1))
        for _, value in latest.islice(hi):
            secs = self.secs[value]
            j = bisect.bisect_left(secs, t)
            if j and secs[j - 1] >= since:
                n += 1
        return n


INDEX_FROM = 64  # clicks of one key before its distinct counts get a ValueIndex


@dataclass(frozen=True)
class Click:
    """A click as the state sees it: ids, epoch second, and a unique id for idempotent retries."""

    ip: int
    app: int
    device: int
    os: int
    channel: int
    click_time: int
    click_id: str | None = None


class StateUnavailable(RuntimeError):
    """The state backend cannot be reached; serving must refuse rather than guess features."""


@dataclass
class StoreStats:
    events: int = 0
    keys: int = 0
    late_events: int = 0
    duplicate_clicks: int = 0


class StateStore(ABC):
    """Where the online state lives. One call per batch: record the clicks, return their histories."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.groups = spec.key_groups
        # Fields whose values a group's history must keep (for its distinct counts).
        self.fields: dict[tuple[str, ...], tuple[str, ...]] = {
            g: tuple(dict.fromkeys(d.of for d in spec.distincts if d.keys == g)) for g in self.groups
        }
        self.horizon = spec.max_window

    @abstractmethod
    def record_and_fetch(self, clicks: Sequence[Click]) -> list[dict[tuple[str, ...], History]]:
        """Record the clicks (skipping click_ids seen before), then return for each click, per key group,
        a history that holds at least the group's clicks in [t - horizon, t - 1]."""

    @abstractmethod
    def stats(self) -> StoreStats: ...

    def ping(self) -> None:
        """Raise StateUnavailable when the backend is down."""

    def key_of(self, group: tuple[str, ...], click: Click) -> tuple[int, ...]:
        return tuple(getattr(click, k) for k in group)


FIELD_INDEX = {f: i for i, f in enumerate(("ip", "app", "device", "os", "channel"))}


class MemoryStore(StateStore):
    """In-process state: sorted per-key lists, evicted by event time once past the retention.

    Eviction is incremental: every recorded (group, key) also enters a FIFO by time, and each record pops
    the entries that fell behind the cutoff, so the cost is O(1) amortised per event and untouched keys
    leave memory as well."""

    def __init__(self, spec: FeatureSpec = DEFAULT_SPEC, allowed_lateness: int = 0) -> None:
        super().__init__(spec)
        # A click up to `allowed_lateness` s behind the newest still gets exact features; memory grows with it.
        self.retention = self.horizon + allowed_lateness
        self.state: dict[tuple[str, ...], dict[tuple[int, ...], History]] = {g: {} for g in self.groups}
        self._plan = [
            (g, self.state[g], _key_getter(tuple(FIELD_INDEX[k] for k in g)), tuple(FIELD_INDEX[f] for f in self.fields[g]))
            for g in self.groups
        ]
        self.watermark = -(2**62)  # largest second seen
        self.expiry: deque[tuple[int, dict, tuple[int, ...], object]] = deque()
        self.seen_ids: dict[str, int] = {}
        self._stats = StoreStats()

    def record_and_fetch(self, clicks: Sequence[Click]) -> list[dict[tuple[str, ...], History]]:
        # Evict no further than the batch's earliest click still needs: a batch spanning minutes must not
        # drop, while recording its later clicks, the history its earlier clicks are about to read.
        floor = min((c.click_time for c in clicks), default=0)
        for c in clicks:
            self._record(c, floor)
        out = []
        for c in clicks:
            ids = (c.ip, c.app, c.device, c.os, c.channel)
            out.append({g: table.get(key_of(ids)) or _EMPTY for g, table, key_of, _ in self._plan})
        return out

    def _record(self, c: Click, floor: int | None = None) -> None:
        t = c.click_time
        if c.click_id is not None:
            if c.click_id in self.seen_ids:
                self._stats.duplicate_clicks += 1
                return
            self.seen_ids[c.click_id] = t
            self.expiry.append((t, self.seen_ids, c.click_id, None))
        if t > self.watermark:
            self.watermark = t
            self._evict((t if floor is None else min(t, floor)) - self.retention)
        elif t < self.watermark - self.retention:
            # Too old to matter to any click still in retention: scored from what state holds, not kept.
            self._stats.late_events += 1
            return
        ids = (c.ip, c.app, c.device, c.os, c.channel)
        for g, table, key_of, fidx in self._plan:
            key = key_of(ids)
            h = table.get(key)
            if h is None:
                h = table[key] = History(values={f: [] for f in self.fields[g]})
            times = h.times
            if not times or times[-1] <= t:
                times.append(t)
                for vals, i in zip(h.values.values(), fidx):
                    vals.append(ids[i])
            else:  # late click: place it by its time
                at = bisect.bisect_right(times, t)
                times.insert(at, t)
                for vals, i in zip(h.values.values(), fidx):
                    vals.insert(at, ids[i])
            if h.by_value is not None:
                cutoff = self.watermark - self.retention
                for index, i in zip(h.by_value.values(), fidx):
                    index.add(ids[i], t, cutoff)
            elif fidx and len(times) >= INDEX_FROM:
                h.by_value = {}
                for f, vals in h.values.items():
                    index = h.by_value[f] = ValueIndex()
                    for ti, v in zip(times, vals):
                        index.add(v, ti, times[0])
            self.expiry.append((t, table, key, h))

    def _evict(self, cutoff: int) -> None:
        expiry = self.expiry
        while expiry and expiry[0][0] < cutoff:
            _, table, key, h = expiry.popleft()
            if h is None:  # a click_id
                if table.get(key, cutoff) < cutoff:
                    del table[key]
                continue
            if table.get(key) is h:
                _trim(h, cutoff)
                if not h.times:
                    del table[key]

    def stats(self) -> StoreStats:
        self._stats.keys = sum(len(t) for t in self.state.values())
        self._stats.events = sum(len(h.times) for t in self.state.values() for h in t.values())
        return self._stats


_EMPTY = History()


def _key_getter(positions: tuple[int, ...]):
    """ids -> the group's key tuple (itemgetter returns a bare value for one position)."""
    if len(positions) == 1:
        (p,) = positions
        return lambda ids: (ids[p],)
    return operator.itemgetter(*positions)


def _trim(h: History, cutoff: int) -> None:
    i = bisect.bisect_left(h.times, cutoff)
    if i:
        del h.times[:i]
        for vals in h.values.values():
            del vals[:i]


class FeaturePlan:
    """The spec compiled into per-group lookups, so scoring a click is bisects and slices."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.names = spec.feature_names
        index = {n: i for i, n in enumerate(self.names)}
        self.per_group: list[tuple[tuple[str, ...], list, list, list, list]] = []
        self.windows: dict[int, int] = {}
        for g in spec.key_groups:
            # Every bound a group needs is "first click at or after second t - offset"; bands share them
            # ([t-300, t-1] and [t-3600, t-301] both cut at t-300), so each is one bisect per click.
            offsets = sorted(
                {0}
                | {b.start - 1 for c in spec.counts if c.keys == g for b in c.bands}
                | {b.end for c in spec.counts if c.keys == g for b in c.bands}
                | {d.window for d in spec.distincts if d.keys == g}
            )
            at = {o: k for k, o in enumerate(offsets)}
            bands = [(index[n], at[b.start - 1], at[b.end]) for c in spec.counts if c.keys == g
                     for b, n in zip(c.bands, c.names())]
            prevs = [(index[p.name], p.window) for p in spec.since_previous if p.keys == g]
            dists = [(index[d.name], d.of, at[d.window]) for d in spec.distincts if d.keys == g]
            for d in spec.distincts:
                self.windows[index[d.name]] = d.window
            self.per_group.append((g, offsets, bands, prevs, dists))
        self.hour = (index["hour_sin"], index["hour_cos"]) if spec.hour_of_day else None
        self.hour_table = FeatureSpec.hour_table()

    def row(self, t: int, histories: dict[tuple[str, ...], History]) -> list[float]:
        out = [0.0] * len(self.names)
        nan = np.nan
        left = bisect.bisect_left
        windows = self.windows
        for g, offsets, bands, prevs, dists in self.per_group:
            h = histories[g]
            times = h.times
            if not times:
                for i, _ in prevs:
                    out[i] = nan
                continue
            end = left(times, t)  # clicks before this second
            cut = [end] + [left(times, t - o, 0, end) for o in offsets[1:]]
            for i, hi, lo in bands:
                out[i] = cut[hi] - cut[lo]
            for i, window in prevs:
                out[i] = t - times[end - 1] if end and times[end - 1] >= t - window else nan
            for i, of, lo in dists:
                if h.by_value is None:
                    out[i] = len(set(h.values[of][cut[lo]:end]))
                else:
                    out[i] = h.by_value[of].count(t - windows[i], t)
        if self.hour:
            s, c = self.hour_table[(t // 3600) % 24]
            out[self.hour[0]], out[self.hour[1]] = s, c
        return out


class OnlineFeatures:
    """Score-then-remember for live clicks, over any StateStore."""

    def __init__(self, store: StateStore | None = None, spec: FeatureSpec = DEFAULT_SPEC) -> None:
        self.spec = spec
        self.store = store or MemoryStore(spec)
        self.plan = FeaturePlan(spec)

    def score(self, clicks: Sequence[Click]) -> np.ndarray:
        """Feature matrix (clicks x spec.feature_names), after recording the clicks into the state."""
        histories = self.store.record_and_fetch(clicks)
        return np.array([self.plan.row(c.click_time, h) for c, h in zip(clicks, histories)], dtype=np.float64)


def clicks_from_frame(frame: pd.DataFrame) -> list[Click]:
    cid = frame["click_id"].astype(str).tolist() if "click_id" in frame else itertools.repeat(None)
    cols = [frame[c].astype(np.int64).tolist() for c in ("ip", "app", "device", "os", "channel", "click_time")]
    return [Click(*vals, click_id=i) for *vals, i in zip(*cols, cid)]


def compute(
    clicks: pd.DataFrame, spec: FeatureSpec, store: StateStore | None = None, batch_size: int = 1
) -> pd.DataFrame:
    """Replay a click file through the online state in time order (the file's own order is irrelevant)."""
    ordered = clicks.sort_values(["click_time", "row_id"], kind="stable")
    online = OnlineFeatures(store or MemoryStore(spec), spec)
    events = clicks_from_frame(ordered.drop(columns=["click_id"], errors="ignore"))
    rows = []
    for i in range(0, len(events), batch_size):
        rows.append(online.score(events[i : i + batch_size]))
    matrix = np.vstack(rows) if rows else np.empty((0, len(spec.feature_names)))
    out = pd.DataFrame(matrix, columns=spec.feature_names)
    out.insert(0, "row_id", ordered["row_id"].to_numpy())
    return out
