"""The in-process online state, compiled with numba: record a batch of clicks, then read their features.

Layout: `index` maps (group, its key as five ids, -1 where the group does not use the field) to a slot.
`store` is one typed list of int64 tables: the per-slot meta and keys, the FIFO, the free list, the plan,
then one table per slot holding a key's recent clicks sorted by second, `store[SLOT0 + slot][0, start:end]`,
and the values its group's distinct counts need, `store[SLOT0 + slot][1 + f, start:end]`. (Two containers
and few arrays per call: numba types each argument on every call, ~1 us per typed container.)
Every recorded click also enters a FIFO of (second, slot, generation); when the watermark moves, entries
older than the cutoff are popped and their slot trimmed, and an emptied slot is freed (its generation
bumped, so stale entries skip it). Memory therefore follows the window, not the stream. Features are binary searches over a slot's seconds and, for
distinct counts, one pass over the window's values with a stamped mark table.

The semantics are those of attribution.features.online (documented there); this module is its engine.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.typed import Dict, List

from attribution.features.spec import KEY_FIELDS, FeatureSpec

KEY = types.UniTuple(types.int64, 6)  # (group, ip, app, device, os, channel)
# store tables: per-slot meta (columns below), per-slot keys, the FIFO (second, slot, generation), free
# slots, the plan's tables, then the slots
META, KEYS, FIFO, FREE = 0, 1, 2, 3
GROUP_FIELDS, VALUE_FIELDS, OFFSETS, N_OFFSETS, BANDS, PREVS, DISTS, HOUR = range(4, 12)
SLOT0 = 12
START, END, GEN, GROUP = 0, 1, 2, 3
# scalars
WATERMARK, LATE, FIFO_HEAD, FIFO_TAIL, N_SLOTS, N_FREE, STAMP = range(7)
MARKS = 1 << 16  # ids below this are counted with the mark table (app, device, os, channel are uint16)
NO_KEY = -1


class KernelPlan:
    """The spec flattened into integer tables the compiled code loops over."""

    def __init__(self, spec: FeatureSpec) -> None:
        names = spec.feature_names
        at_name = {n: i for i, n in enumerate(names)}
        groups = spec.key_groups
        self.n_features = len(names)
        self.group_fields = np.array([[1 if f in g else 0 for f in KEY_FIELDS] for g in groups], np.int64)
        fields = [list(spec.distinct_fields(g)) for g in groups]
        self.n_values = max([len(f) for f in fields] + [1])
        # per group, the id column stored in each value row (-1: unused)
        self.value_fields = np.full((len(groups), self.n_values), -1, np.int64)
        offsets: list[list[int]] = []
        bands, prevs, dists = [], [], []
        for gi, g in enumerate(groups):
            for k, f in enumerate(fields[gi]):
                self.value_fields[gi, k] = KEY_FIELDS.index(f)
            offs = spec.window_offsets(g)
            offsets.append(offs)
            at = {o: k for k, o in enumerate(offs)}
            bands += [(gi, at_name[n], at[b.start - 1], at[b.end]) for c in spec.counts if c.keys == g
                      for b, n in zip(c.bands, c.names())]
            prevs += [(gi, at_name[p.name], p.window) for p in spec.since_previous if p.keys == g]
            dists += [(gi, at_name[d.name], fields[gi].index(d.of), at[d.window]) for d in spec.distincts if d.keys == g]
        self.offsets = np.full((len(groups), max(len(o) for o in offsets)), -1, np.int64)
        self.n_offsets = np.array([len(o) for o in offsets], np.int64)
        for gi, o in enumerate(offsets):
            self.offsets[gi, : len(o)] = o
        self.bands = np.array(bands, np.int64).reshape(-1, 4)
        self.prevs = np.array(prevs, np.int64).reshape(-1, 3)
        self.dists = np.array(dists, np.int64).reshape(-1, 4)
        self.hour = np.array([names.index("hour_sin"), names.index("hour_cos")] if spec.hour_of_day else [-1, -1],
                             np.int64)
        self.hour_table = np.array(FeatureSpec.hour_table(), np.float64)

    def tables(self) -> list[np.ndarray]:
        """The integer tables at store[GROUP_FIELDS:SLOT0], each 2-D."""
        return [self.group_fields, self.value_fields, self.offsets, self.n_offsets.reshape(1, -1), self.bands,
                self.prevs, self.dists, self.hour.reshape(1, -1)]


class KernelState:
    """Containers the compiled functions mutate in place (the typed list lets them swap in grown tables)."""

    def __init__(self, plan: KernelPlan) -> None:
        self.index = Dict.empty(KEY, types.int64)
        self.store = List([np.zeros((0, 4), np.int64), np.zeros((0, 5), np.int64), np.zeros((1024, 3), np.int64),
                           np.zeros((0, 1), np.int64), *(np.ascontiguousarray(t, np.int64) for t in plan.tables())])
        self.marks = np.zeros(MARKS, np.int32)  # int32: the table stays in L2 cache
        self.scalars = np.zeros(7, np.int64)
        self.scalars[WATERMARK] = -(2**62)
        self.hour_table = plan.hour_table

    def args(self) -> tuple:
        return self.index, self.store, self.marks, self.scalars


@numba.njit(cache=True)
def _key(ids: np.ndarray, mask: np.ndarray, group: int) -> tuple:
    return (group, ids[0] if mask[0] else NO_KEY, ids[1] if mask[1] else NO_KEY, ids[2] if mask[2] else NO_KEY,
            ids[3] if mask[3] else NO_KEY, ids[4] if mask[4] else NO_KEY)


@numba.njit(cache=True)
def _find(table, key: tuple) -> int:
    """The key's slot, or -1 (typed Dict.get would return an Optional)."""
    if key in table:
        return table[key]
    return -1


@numba.njit(cache=True)
def _new_slot(state: tuple, group: int, key: tuple, n_rows: int) -> int:
    index, tables, sc = state[0], state[1], state[3]
    if sc[N_FREE] > 0:
        sc[N_FREE] -= 1
        slot = tables[FREE][sc[N_FREE], 0]
    else:
        slot = sc[N_SLOTS]
        sc[N_SLOTS] += 1
        if slot == len(tables[META]):  # grow the per-slot tables
            cap = max(1024, 2 * slot)
            for tab in (META, KEYS):
                old = tables[tab]
                grown = np.zeros((cap, old.shape[1]), np.int64)
                grown[:slot] = old
                tables[tab] = grown
        tables.append(np.zeros((n_rows, 4), np.int64))
    meta = tables[META]
    meta[slot, START] = 0
    meta[slot, END] = 0
    meta[slot, GROUP] = group
    keys = tables[KEYS]
    for f in range(5):
        keys[slot, f] = key[1 + f]
    index[key] = slot
    return slot


@numba.njit(cache=True)
def _insert(state: tuple, slot: int, t: int, ids: np.ndarray, value_fields: np.ndarray) -> None:
    """Place the click by its second (appending in the usual, in-order case)."""
    tables = state[1]
    meta = tables[META]
    s0, e0 = meta[slot, START], meta[slot, END]
    rows = tables[SLOT0 + slot]
    cap = rows.shape[1]
    if e0 == cap:  # full: slide the live part down, or grow
        n = e0 - s0
        if s0 >= cap // 2:
            rows[:, :n] = rows[:, s0:e0].copy()
        else:
            grown = np.zeros((rows.shape[0], 2 * cap), np.int64)
            grown[:, :n] = rows[:, s0:e0]
            tables[SLOT0 + slot] = grown
            rows = grown
        s0, e0 = 0, n
        meta[slot, START] = 0
    pos = e0
    if e0 > s0 and rows[0, e0 - 1] > t:  # a late click
        pos = s0 + np.searchsorted(rows[0, s0:e0], t, side="right")
        rows[:, pos + 1 : e0 + 1] = rows[:, pos:e0].copy()
    rows[0, pos] = t
    for f in range(len(value_fields)):
        if value_fields[f] >= 0:
            rows[1 + f, pos] = ids[value_fields[f]]
    meta[slot, END] = e0 + 1


@numba.njit(cache=True)
def _enqueue(state: tuple, t: int, slot: int) -> None:
    tables, sc = state[1], state[3]
    fifo = tables[FIFO]
    head, tail = sc[FIFO_HEAD], sc[FIFO_TAIL]
    if tail == len(fifo):
        n = tail - head
        if head >= len(fifo) // 2:
            fifo[:n] = fifo[head:tail].copy()
        else:
            grown = np.zeros((2 * len(fifo), 3), np.int64)
            grown[:n] = fifo[head:tail]
            tables[FIFO] = grown
            fifo = grown
        sc[FIFO_HEAD], sc[FIFO_TAIL] = 0, n
        tail = n
    fifo[tail, 0] = t
    fifo[tail, 1] = slot
    fifo[tail, 2] = tables[META][slot, GEN]
    sc[FIFO_TAIL] = tail + 1


@numba.njit(cache=True)
def _evict(state: tuple, cutoff: int) -> None:
    index, tables, sc = state[0], state[1], state[3]
    fifo, meta = tables[FIFO], tables[META]
    head = sc[FIFO_HEAD]
    while head < sc[FIFO_TAIL] and fifo[head, 0] < cutoff:
        slot, gen = fifo[head, 1], fifo[head, 2]
        head += 1
        if meta[slot, GEN] != gen:  # the slot was freed since (and maybe reused)
            continue
        s0, e0 = meta[slot, START], meta[slot, END]
        s0 += np.searchsorted(tables[SLOT0 + slot][0, s0:e0], cutoff, side="left")
        meta[slot, START] = s0
        if s0 == e0:  # nothing left in the window: forget the key
            k = tables[KEYS][slot]
            index.pop((meta[slot, GROUP], k[0], k[1], k[2], k[3], k[4]))
            meta[slot, GEN] += 1
            meta[slot, GROUP] = -1
            if sc[N_FREE] == len(tables[FREE]):
                grown = np.zeros((max(1024, 2 * len(tables[FREE])), 1), np.int64)
                grown[: sc[N_FREE]] = tables[FREE][: sc[N_FREE]]
                tables[FREE] = grown
            tables[FREE][sc[N_FREE], 0] = slot
            sc[N_FREE] += 1
    sc[FIFO_HEAD] = head


@numba.njit(cache=True)
def _record(state: tuple, ids: np.ndarray, t: int, floor: int, retention: int) -> None:
    index, tables, sc = state[0], state[1], state[3]
    if t > sc[WATERMARK]:
        sc[WATERMARK] = t
        _evict(state, min(t, floor) - retention)
    elif t < sc[WATERMARK] - retention:
        sc[LATE] += 1  # too old to matter to any click still in retention: scored, not kept
        return
    group_fields, value_fields = tables[GROUP_FIELDS], tables[VALUE_FIELDS]
    for g in range(len(group_fields)):
        key = _key(ids, group_fields[g], g)
        slot = _find(index, key)
        if slot < 0:
            slot = _new_slot(state, g, key, 1 + value_fields.shape[1])
        _insert(state, slot, t, ids, value_fields[g])
        _enqueue(state, t, slot)


@numba.njit(cache=True)
def _distinct(state: tuple, row: np.ndarray, lo: int, hi: int) -> int:
    marks, sc = state[2], state[3]
    if sc[STAMP] == 2**31 - 1:  # stamps are int32: start the table over before they wrap
        marks[:] = 0
        sc[STAMP] = 0
    sc[STAMP] += 1
    stamp = np.int32(sc[STAMP])
    n = 0
    big = 0
    for p in range(lo, hi):
        v = row[p]
        if v < MARKS:
            if marks[v] != stamp:
                marks[v] = stamp
                n += 1
        else:
            big += 1
    if big:  # ids past the mark table (an ip): count those by sorting
        wide = np.sort(row[lo:hi][row[lo:hi] >= MARKS])
        n += 1 + int(np.sum(wide[1:] != wide[:-1]))
    return n


@numba.njit(cache=True)
def _read(state: tuple, ids: np.ndarray, t: int, hour_table: np.ndarray, out: np.ndarray) -> None:
    index, tables = state[0], state[1]
    meta = tables[META]
    group_fields, offsets, n_offsets = tables[GROUP_FIELDS], tables[OFFSETS], tables[N_OFFSETS][0]
    bands, prevs, dists, hour = tables[BANDS], tables[PREVS], tables[DISTS], tables[HOUR][0]
    cuts = np.zeros(offsets.shape[1], np.int64)
    empty = np.zeros((1, 0), np.int64)
    for g in range(len(group_fields)):
        slot = _find(index, _key(ids, group_fields[g], g))
        s0 = e0 = end = 0
        rows = empty
        if slot >= 0:
            s0, e0 = meta[slot, START], meta[slot, END]
            rows = tables[SLOT0 + slot]
        if e0 == s0:
            cuts[:] = 0
        else:
            end = s0 + np.searchsorted(rows[0, s0:e0], t, side="left")  # clicks before this second
            cuts[0] = end
            for k in range(1, n_offsets[g]):
                cuts[k] = s0 + np.searchsorted(rows[0, s0:end], t - offsets[g, k], side="left")
        for b in range(len(bands)):
            if bands[b, 0] == g:
                out[bands[b, 1]] = cuts[bands[b, 2]] - cuts[bands[b, 3]]
        for p in range(len(prevs)):
            if prevs[p, 0] == g:
                if end > s0 and rows[0, end - 1] >= t - prevs[p, 2]:
                    out[prevs[p, 1]] = t - rows[0, end - 1]
                else:
                    out[prevs[p, 1]] = np.nan
        for d in range(len(dists)):
            if dists[d, 0] == g:
                out[dists[d, 1]] = 0 if end <= s0 else _distinct(state, rows[1 + dists[d, 2]], cuts[dists[d, 3]], end)
    if hour[0] >= 0:
        h = (t // 3600) % 24
        out[hour[0]] = hour_table[h, 0]
        out[hour[1]] = hour_table[h, 1]


@numba.njit(cache=True)
def score_batch(index, tables, marks: np.ndarray, sc: np.ndarray, ids: np.ndarray, t: np.ndarray,
                record: np.ndarray, retention: int, hour_table: np.ndarray, out: np.ndarray) -> None:
    """Record the batch's clicks flagged in `record`, then write every click's features into out[i]."""
    state = (index, tables, marks, sc)
    # Evict no further than the batch's earliest click still needs: a batch spanning minutes must not drop,
    # while recording its later clicks, the history its earlier clicks are about to read.
    floor = t.min() if len(t) else 0
    for i in range(len(t)):
        if record[i]:
            _record(state, ids[i], t[i], floor, retention)
    for i in range(len(t)):
        _read(state, ids[i], t[i], hour_table, out[i])


@numba.njit(cache=True)
def stats(tables, sc: np.ndarray) -> tuple[int, int]:
    """(events, keys) held."""
    meta = tables[META]
    events = keys = 0
    for s in range(sc[N_SLOTS]):
        if meta[s, GROUP] >= 0:
            keys += 1
            events += meta[s, END] - meta[s, START]
    return events, keys
