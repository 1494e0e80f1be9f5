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
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from attribution.features.spec import DEFAULT_SPEC, FeatureSpec

log = logging.getLogger(__name__)


@dataclass
class History:
    """One key's recent clicks, sorted by second; `values[f][i]` is field f of click i."""

    times: list[int] = field(default_factory=list)
    values: dict[str, list[int]] = field(default_factory=dict)


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
    """Where the online state lives. One call per batch: record the clicks, return their features."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.horizon = spec.max_window

    @abstractmethod
    def score(self, clicks: Sequence[Click]) -> np.ndarray:
        """Record the clicks (skipping click_ids seen before), then return each click's features (clicks x
        spec.feature_names) from the clicks of strictly earlier seconds held in the state."""

    def score_arrays(self, ids: np.ndarray, t: np.ndarray, click_ids: Sequence[str | None] | None = None) -> np.ndarray:
        """score() for clicks as arrays: ids (n x 5: ip, app, device, os, channel), seconds, optional click_ids."""
        cids = click_ids if click_ids is not None else [None] * len(t)
        return self.score([Click(*row, click_id=cid) for *row, cid in zip(*ids.T.tolist(), t.tolist(), cids)])

    @abstractmethod
    def stats(self) -> StoreStats: ...

    def ping(self) -> None:
        """Raise StateUnavailable when the backend is down."""


class HistoryStore(StateStore):
    """A store that hands back each click's recent clicks per key group (a remote one: Redis); the features
    are then read from those histories by the FeaturePlan."""

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__(spec)
        self.groups = spec.key_groups
        # Fields whose values a group's history must keep (for its distinct counts).
        self.fields = {g: spec.distinct_fields(g) for g in self.groups}
        self.plan = FeaturePlan(spec)

    @abstractmethod
    def record_and_fetch(self, clicks: Sequence[Click]) -> list[dict[tuple[str, ...], History]]:
        """Record the clicks (skipping click_ids seen before), then return for each click, per key group,
        a history that holds at least the group's clicks in [t - horizon, t - 1]."""

    def score(self, clicks: Sequence[Click]) -> np.ndarray:
        histories = self.record_and_fetch(clicks)
        return np.array([self.plan.row(c.click_time, h) for c, h in zip(clicks, histories)], dtype=np.float64)


FIELD_INDEX = {f: i for i, f in enumerate(("ip", "app", "device", "os", "channel"))}


class MemoryStore(StateStore):
    """In-process state, compiled (attribution.features.online.kernel): per key, its recent clicks sorted
    by second; evicted by event time once past the retention.

    Eviction is incremental: every recorded click also enters a FIFO by time, and each record pops the
    entries that fell behind the cutoff, so the cost is O(1) amortised per event and untouched keys leave
    memory as well. click_ids (strings) are remembered here, for the same retention."""

    def __init__(self, spec: FeatureSpec = DEFAULT_SPEC, allowed_lateness: int = 0, incremental_from: int = 64) -> None:
        from attribution.features.online import kernel as k

        super().__init__(spec)
        # A click up to `allowed_lateness` s behind the newest still gets exact features; memory grows with it.
        self.retention = self.horizon + allowed_lateness
        self._k = k
        plan = k.KernelPlan(spec)
        self._n_features = plan.n_features
        # A distinct count over a window of `incremental_from` clicks or more follows its window instead of
        # scanning it (a busy IP holds ~100k clicks in 8 h at full TalkingData rates).
        self._state = k.KernelState(plan, incremental_from)
        self.seen_ids: dict[str, int] = {}
        self._id_expiry: deque[tuple[int, str]] = deque()
        self._record_all = np.ones(1, np.bool_)  # the kernel only reads it: shared by single-click calls
        self._stats = StoreStats()

    def score(self, clicks: Sequence[Click]) -> np.ndarray:
        # one row per click, ids then second; the kernel reads a row's first five columns as its ids
        rows = np.array([(c.ip, c.app, c.device, c.os, c.channel, c.click_time) for c in clicks],
                        dtype=np.int64).reshape(len(clicks), 6)
        cids = [c.click_id for c in clicks]
        return self.score_arrays(rows, rows[:, 5].copy(), None if cids.count(None) == len(cids) else cids)

    def score_arrays(self, ids: np.ndarray, t: np.ndarray, click_ids: Sequence[str | None] | None = None) -> np.ndarray:
        # ids may carry more columns (score() passes the seconds as a sixth): the kernel reads the first five
        if click_ids is None:
            record = self._record_all if len(t) == 1 else np.ones(len(t), np.bool_)
        else:
            record = np.ones(len(t), np.bool_)
            for i, cid in enumerate(click_ids):
                if cid is None:
                    continue
                if cid in self.seen_ids:
                    self._stats.duplicate_clicks += 1
                    record[i] = False
                else:
                    self.seen_ids[cid] = int(t[i])
                    self._id_expiry.append((int(t[i]), cid))
        out = np.empty((len(t), self._n_features), np.float64)
        self._k.score_batch(*self._state.args(), np.ascontiguousarray(ids, np.int64), np.ascontiguousarray(t, np.int64),
                            record, self.retention, self._state.hour_table, out)
        if self._id_expiry and len(t):
            cutoff = min(int(self._state.scalars[self._k.WATERMARK]), int(t.min())) - self.retention
            while self._id_expiry and self._id_expiry[0][0] < cutoff:
                _, cid = self._id_expiry.popleft()
                if self.seen_ids.get(cid, cutoff) < cutoff:
                    del self.seen_ids[cid]
        return out

    def stats(self) -> StoreStats:
        self._stats.events, self._stats.keys = (int(x) for x in self._k.stats(self._state.store, self._state.scalars))
        self._stats.late_events = int(self._state.scalars[self._k.LATE])
        return self._stats


class FeaturePlan:
    """The spec compiled into per-group lookups, so scoring a click is bisects and slices."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.names = spec.feature_names
        index = {n: i for i, n in enumerate(self.names)}
        self.per_group: list[tuple[tuple[str, ...], list, list, list, list]] = []
        for g in spec.key_groups:
            offsets = spec.window_offsets(g)  # one bisect per offset and click
            at = {o: k for k, o in enumerate(offsets)}
            bands = [(index[n], at[b.start - 1], at[b.end]) for c in spec.counts if c.keys == g
                     for b, n in zip(c.bands, c.names())]
            prevs = [(index[p.name], p.window) for p in spec.since_previous if p.keys == g]
            dists = [(index[d.name], d.of, at[d.window]) for d in spec.distincts if d.keys == g]
            self.per_group.append((g, offsets, bands, prevs, dists))
        self.hour = (index["hour_sin"], index["hour_cos"]) if spec.hour_of_day else None
        self.hour_table = FeatureSpec.hour_table()

    def row(self, t: int, histories: dict[tuple[str, ...], History]) -> list[float]:
        out = [0.0] * len(self.names)
        nan = np.nan
        left = bisect.bisect_left
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
                out[i] = len(set(h.values[of][cut[lo]:end]))
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
        return self.store.score(clicks)


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
