"""The online form of the spec: state that, fed clicks, returns for each click exactly what the SQL gives.

A store keeps, per key group and key, the recent clicks (second and the values that distinct counts need).
`StateStore.score` records a batch of clicks and then reads each click's features from the state; as every
feature only sees seconds strictly before the click's own, recording first is the same as reading first, and
a batch can hold several clicks of one key in any order.

Time (docs/online-state.md): the watermark is the largest second recorded. A click more than `late_by`
(= max clock skew + allowed lateness) seconds behind it is late: not recorded, counted, and scored from the
clicks at or after watermark - retention only (retention = horizon + late_by is what the state keeps). Any
other click is recorded in place by its time and reads its whole window. Since the reference clock
(attribution.features.online.clock) keeps clicks within max clock skew of the stream, a click ahead of the
stream moves the watermark by at most the skew, which never evicts what another click still needs.
Retried clicks (same `click_id`) are not recorded twice; the id is remembered, by event time, for as long as
the click is held, and marked only once the click is recorded.
"""

from __future__ import annotations

import itertools
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from attribution.features.online.clock import DEFAULT_MAX_SKEW
from attribution.features.spec import DEFAULT_SPEC, FeatureSpec

log = logging.getLogger(__name__)


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
    """The state backend cannot be reached or refuses writes; serving must refuse rather than guess features."""


@dataclass
class StoreStats:
    events: int = 0
    keys: int = 0
    late_events: int = 0
    duplicate_clicks: int = 0


class StateStore(ABC):
    """Where the online state lives. One call per batch: record the clicks, return their features."""

    def __init__(self, spec: FeatureSpec, max_clock_skew: int = DEFAULT_MAX_SKEW, allowed_lateness: int = 0) -> None:
        if max_clock_skew < 0 or allowed_lateness < 0:
            raise ValueError(f"clock skew and lateness must be >= 0 s, got {max_clock_skew}, {allowed_lateness}")
        self.spec = spec
        self.horizon = spec.max_window
        self.late_by = int(max_clock_skew + allowed_lateness)
        self.retention = self.horizon + self.late_by

    def score(self, clicks: Sequence[Click]) -> np.ndarray:
        """Feature matrix (clicks x spec.feature_names), after recording the clicks (skipping click_ids seen
        before and late clicks)."""
        rows = np.array([(c.ip, c.app, c.device, c.os, c.channel, c.click_time) for c in clicks],
                        dtype=np.int64).reshape(len(clicks), 6)
        cids = [c.click_id for c in clicks]
        return self.score_arrays(rows[:, :5].copy(), rows[:, 5].copy(), None if cids.count(None) == len(cids) else cids)

    @abstractmethod
    def score_arrays(self, ids: np.ndarray, t: np.ndarray, click_ids: Sequence[str | None] | None = None) -> np.ndarray:
        """score() for clicks as arrays: ids (n x 5: ip, app, device, os, channel), seconds, optional click_ids."""

    @abstractmethod
    def stats(self) -> StoreStats: ...

    def ping(self) -> None:
        """Raise StateUnavailable when the backend is down."""


class SeenIds:
    """Click ids recorded in the last `retention` seconds of event time: a dict (id -> second) and a FIFO by
    second. Memory follows the clicks held, not the stream (bench/online.py measures bytes per id)."""

    def __init__(self) -> None:
        self.second: dict[str, int] = {}
        self._fifo: deque[tuple[int, str]] = deque()

    def __len__(self) -> int:
        return len(self.second)

    def __contains__(self, cid: str) -> bool:
        return cid in self.second

    def add(self, cid: str, t: int) -> None:
        self.second[cid] = t
        self._fifo.append((t, cid))

    def forget_before(self, cutoff: int) -> None:
        while self._fifo and self._fifo[0][0] < cutoff:
            _, cid = self._fifo.popleft()
            if self.second.get(cid, cutoff) < cutoff:
                del self.second[cid]


class MemoryStore(StateStore):
    """In-process state, compiled (attribution.features.online.kernel): per key, its recent clicks sorted
    by second; evicted by event time once past the retention.

    Eviction is incremental: every recorded click also enters a FIFO by time, and each record pops the
    entries that fell behind the cutoff, so the cost is O(1) amortised per event and untouched keys leave
    memory as well."""

    def __init__(self, spec: FeatureSpec = DEFAULT_SPEC, max_clock_skew: int = DEFAULT_MAX_SKEW,
                 allowed_lateness: int = 0, incremental_from: int = 64) -> None:
        from attribution.features.online import kernel as k

        super().__init__(spec, max_clock_skew, allowed_lateness)
        self._k = k
        plan = k.KernelPlan(spec)
        self._n_features = plan.n_features
        # A distinct count over a window of `incremental_from` clicks or more follows its window instead of
        # scanning it (a busy IP holds ~100k clicks in 8 h at full TalkingData rates).
        self._state = k.KernelState(plan, incremental_from)
        self.seen_ids = SeenIds()
        self._stats = StoreStats()

    def score_arrays(self, ids: np.ndarray, t: np.ndarray, click_ids: Sequence[str | None] | None = None) -> np.ndarray:
        record = np.ones(len(t), np.bool_)  # the kernel clears the flags of late clicks
        if click_ids is not None:
            batch: set[str] = set()
            for i, cid in enumerate(click_ids):
                if cid is not None:
                    if cid in self.seen_ids or cid in batch:
                        self._stats.duplicate_clicks += 1
                        record[i] = False
                    batch.add(cid)
        out = np.empty((len(t), self._n_features), np.float64)
        self._k.score_batch(*self._state.args(), np.ascontiguousarray(ids[:, :5], np.int64),
                            np.ascontiguousarray(t, np.int64), record, self.retention, self.late_by,
                            self._state.hour_table, out)
        if click_ids is not None:  # marked only now that the clicks are recorded
            for i in np.flatnonzero(record).tolist():
                if click_ids[i] is not None:
                    self.seen_ids.add(click_ids[i], int(t[i]))
            if len(t):
                self.seen_ids.forget_before(min(int(self._state.scalars[self._k.WATERMARK]), int(t.min())) - self.retention)
        return out

    @property
    def watermark(self) -> int:
        return int(self._state.scalars[self._k.WATERMARK])

    def stats(self) -> StoreStats:
        self._stats.events, self._stats.keys = (int(x) for x in self._k.stats(self._state.store, self._state.scalars))
        self._stats.late_events = int(self._state.scalars[self._k.LATE])
        return self._stats


def clicks_from_frame(frame: pd.DataFrame) -> list[Click]:
    cid = frame["click_id"].astype(str).tolist() if "click_id" in frame else itertools.repeat(None)
    cols = [frame[c].astype(np.int64).tolist() for c in ("ip", "app", "device", "os", "channel", "click_time")]
    return [Click(*vals, click_id=i) for *vals, i in zip(*cols, cid)]


def compute(
    clicks: pd.DataFrame, spec: FeatureSpec, store: StateStore | None = None, batch_size: int = 1
) -> pd.DataFrame:
    """Replay a click file through the online state in time order (the file's own order is irrelevant)."""
    ordered = clicks.sort_values(["click_time", "row_id"], kind="stable")
    store = store or MemoryStore(spec)
    cols = ordered[["ip", "app", "device", "os", "channel", "click_time"]].to_numpy(np.int64)
    rows = [store.score_arrays(cols[i : i + batch_size, :5], cols[i : i + batch_size, 5])
            for i in range(0, len(cols), batch_size)]
    matrix = np.vstack(rows) if rows else np.empty((0, len(spec.feature_names)))
    out = pd.DataFrame(matrix, columns=spec.feature_names)
    out.insert(0, "row_id", ordered["row_id"].to_numpy())
    return out
