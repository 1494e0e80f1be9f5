"""The in-process online state, compiled with numba: record a batch of clicks, then read their features.

Layout: `store` is one typed list of int64 tables: the per-slot meta (a slot holds one key: its group and
five ids, -1 where the group does not use the field), the FIFO, the free list, the key index, the counted
windows and their value counts (below), the pool, then the plan. Each key's recent clicks, sorted by second,
lie in one region of the pool: `pool[0, base + start : base + end]` their seconds and `pool[1 + f, ...]` the
values its group's distinct counts need. Regions come in power-of-two sizes from MIN_REGION clicks; a full
one moves to a region twice its size, and a freed one goes on its size's free list (linked through the pool
itself) for the next key that needs one, so the pool stays at its high-water mark. (One table for every key,
rather than an array per key in the typed list: fetching a list item costs a call and two atomic reference
counts, ~300 ns at 50k keys when the item is cold, and each click touched ~18 of them.)

Speed comes from touching little memory per click. A batch first reserves room for every key and FIFO entry
it could add, so the loops take the shared tables out of the typed list once (a list item costs a call and
two atomic reference counts, the largest cost in a perf profile when each helper fetched its own). The key
index is an open-addressing hash table (linear probing, backward-shift deletion) holding slot + 1 and the
key's hash per bucket: most keys hold one click, so each click adds and later drops about five keys, and an
insert into numba's typed Dict took ~200 ns.

A distinct count over a long window (`incremental_from` clicks or more; a busy IP holds ~100k clicks in 8 h
at full TalkingData rates) is not rescanned per click: the slot keeps that window's bounds and number of
distinct values, with each value's count in one open-addressing table keyed by (slot, count, value), and
moves the bounds to each click's window, a click or two at a time. Slides, late inserts and eviction keep
those windows in step with the clicks they cover.

Every recorded click also enters a FIFO of (second, slot, generation); when the watermark moves, entries
older than the cutoff are popped and their slot trimmed, and an emptied slot is freed (its generation
bumped, so stale entries skip it). Memory therefore follows the window, not the stream. Features are binary
searches over a slot's seconds and, for distinct counts, one pass over the window's values with a stamped
mark table.

The semantics are those of attribution.features.online.state (documented there); this module is its engine.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.typed import List

from attribution.features.spec import KEY_FIELDS, FeatureSpec

# store tables: per-slot meta (columns below), the FIFO (second, slot, generation), free slots, the key
# index (slot + 1, hash), per-slot counted windows (for each distinct count of the slot's group: first, end,
# distinct values; first = -1 while none is counted), the window counts (tag + 1, value, count), the pool
# (row 0: seconds, then one row per value a distinct count needs; each key's clicks in one region), then the
# plan's tables
META, FIFO, FREE, INDEX, WINDOWS, COUNTS, POOL = range(7)
GROUP_FIELDS, VALUE_FIELDS, OFFSETS, N_OFFSETS, BANDS, PREVS, DISTS, HOUR, DISTINCT_ROWS, GROUP_AT = range(7, 17)
# meta columns: the five ids follow KEY0; COUNTED is 1 once the slot has counted windows (so that the many
# slots without any never touch their row of the windows table); BASE and SIZE: the slot's region of the pool,
# MIN_REGION << SIZE clicks from column BASE
START, END, GEN, GROUP, HASH, COUNTED, BASE, SIZE, KEY0 = range(9)
META_COLUMNS = KEY0 + 5
MIN_REGION = 2  # clicks in a new key's region (most keys never hold more than one or two)
N_SIZES = 48  # region size classes: MIN_REGION << 0 .. 47 clicks
# scalars: then, per size class, the first free region of the pool (-1: none; each free region holds the next
# one's column in its first second)
WATERMARK, LATE, FIFO_HEAD, FIFO_TAIL, N_SLOTS, N_FREE, STAMP, N_COUNTS, INCREMENTAL_FROM, POOL_TOP, GREW = range(11)
FREE_REGION0 = 11
N_SCALARS = FREE_REGION0 + N_SIZES
MAX_DISTINCTS = 16  # distinct counts per key group (a count's tag is slot * MAX_DISTINCTS + its index)
MARKS = 1 << 16  # ids below this are counted with the mark table (app, device, os, channel are uint16)
NO_KEY = -1
GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64: the multiplier of Fibonacci hashing


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
            mine = [d for d in spec.distincts if d.keys == g]
            if len(mine) > MAX_DISTINCTS:
                raise ValueError(f"at most {MAX_DISTINCTS} distinct counts per key group, {g} has {len(mine)}")
            dists += [(gi, at_name[d.name], fields[gi].index(d.of), at[d.window], k) for k, d in enumerate(mine)]
        self.offsets = np.full((len(groups), max(len(o) for o in offsets)), -1, np.int64)
        self.n_offsets = np.array([len(o) for o in offsets], np.int64)
        for gi, o in enumerate(offsets):
            self.offsets[gi, : len(o)] = o
        self.bands = np.array(bands, np.int64).reshape(-1, 4)
        self.prevs = np.array(prevs, np.int64).reshape(-1, 3)
        self.dists = np.array(dists, np.int64).reshape(-1, 5)
        # per group, the value row each distinct count reads (-1: unused)
        self.n_distincts = max([sum(d.keys == g for d in spec.distincts) for g in groups] + [1])
        self.distinct_rows = np.full((len(groups), self.n_distincts), -1, np.int64)
        for gi, _, f, _, k in dists:
            self.distinct_rows[gi, k] = f
        # bands, prevs and dists are listed group by group: row k of group_at holds where each group's rows
        # start in table k (and the end), so that a group's read visits only its own
        self.group_at = np.array([np.searchsorted(t[:, 0], np.arange(len(groups) + 1)) for t in
                                  (self.bands, self.prevs, self.dists)], np.int64)
        self.hour = np.array([names.index("hour_sin"), names.index("hour_cos")] if spec.hour_of_day else [-1, -1],
                             np.int64)
        self.hour_table = np.array(FeatureSpec.hour_table(), np.float64)

    def tables(self) -> list[np.ndarray]:
        """The integer tables at store[GROUP_FIELDS:], each 2-D."""
        return [self.group_fields, self.value_fields, self.offsets, self.n_offsets.reshape(1, -1), self.bands,
                self.prevs, self.dists, self.hour.reshape(1, -1), self.distinct_rows, self.group_at]


class KernelState:
    """Containers the compiled functions mutate in place (the typed list lets them swap in grown tables)."""

    def __init__(self, plan: KernelPlan, incremental_from: int = 64) -> None:
        """incremental_from: a distinct count over a window of at least this many clicks is kept up to date
        as its window moves, rather than counted by a scan (0: always; tests use it)."""
        self.store = List([np.zeros((0, META_COLUMNS), np.int64), np.zeros((1024, 3), np.int64),
                           np.zeros((0, 1), np.int64), np.zeros((1024, 2), np.int64),
                           np.zeros((0, 3 * plan.n_distincts), np.int64), np.zeros((1024, 3), np.int64),
                           np.zeros((1 + plan.n_values, 1024), np.int64),
                           *(np.ascontiguousarray(t, np.int64) for t in plan.tables())])
        self.marks = np.zeros(MARKS, np.int32)  # int32: the table stays in L2 cache
        self.scalars = np.zeros(N_SCALARS, np.int64)
        self.scalars[FREE_REGION0:] = -1
        self.scalars[WATERMARK] = -(2**62)
        self.scalars[INCREMENTAL_FROM] = incremental_from
        self.hour_table = plan.hour_table

    def args(self) -> tuple:
        return self.store, self.marks, self.scalars


@numba.njit(cache=True)
def _key(ids: np.ndarray, mask: np.ndarray, group: int) -> tuple:
    return (group, ids[0] if mask[0] else NO_KEY, ids[1] if mask[1] else NO_KEY, ids[2] if mask[2] else NO_KEY,
            ids[3] if mask[3] else NO_KEY, ids[4] if mask[4] else NO_KEY)


# ---- room: every table but a slot's own grows here, before a batch, so the loops can hold them ----------
@numba.njit(cache=True)
def _grown(old: np.ndarray, rows: int, keep: int) -> np.ndarray:
    grown = np.zeros((rows, old.shape[1]), np.int64)
    grown[:keep] = old[:keep]
    return grown


@numba.njit(cache=True)
def _reserve(tables, sc: np.ndarray, new_keys: int) -> None:
    """Room for `new_keys` more keys and FIFO entries (a recorded click adds at most one of each per group)."""
    need = sc[N_SLOTS] + new_keys
    if need > len(tables[META]):
        cap = max(1024, 2 * len(tables[META]), need)
        tables[META] = _grown(tables[META], cap, sc[N_SLOTS])
        tables[FREE] = _grown(tables[FREE], cap, sc[N_FREE])  # a free list never outgrows the slots
        tables[WINDOWS] = _grown(tables[WINDOWS], cap, sc[N_SLOTS])
    head, tail = sc[FIFO_HEAD], sc[FIFO_TAIL]
    fifo = tables[FIFO]
    if tail + new_keys > len(fifo):
        live = tail - head
        if live + new_keys <= len(fifo) // 2:  # mostly popped: slide down
            fifo[:live] = fifo[head:tail].copy()
        else:
            fifo = np.zeros((max(2 * len(fifo), 2 * (live + new_keys)), 3), np.int64)
            fifo[:live] = tables[FIFO][head:tail]
            tables[FIFO] = fifo
        sc[FIFO_HEAD], sc[FIFO_TAIL] = 0, live
    keys = sc[N_SLOTS] - sc[N_FREE] + new_keys
    if 2 * keys > len(tables[INDEX]):  # keep the index at most half full: short probe runs
        cap = len(tables[INDEX])
        while 2 * keys > cap:
            cap *= 2
        buckets = np.zeros((cap, 2), np.int64)
        meta = tables[META]
        for s in range(sc[N_SLOTS]):
            if meta[s, GROUP] >= 0:
                _place(buckets, meta[s, HASH], s)
        tables[INDEX] = buckets


# ---- the key index --------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _hash(key: tuple) -> int:
    """The fields folded by multiply-xorshift, so that nearby ids land far apart."""
    h = 0
    for v in key:
        h = (h ^ v) * GOLDEN
        h ^= h >> 29
    return h


@numba.njit(cache=True)
def _find(meta: np.ndarray, buckets: np.ndarray, key: tuple, h: int) -> int:
    """The key's slot, or -1."""
    mask = len(buckets) - 1
    i = h & mask
    while True:
        slot = buckets[i, 0] - 1
        if slot < 0:
            return -1
        if (buckets[i, 1] == h and meta[slot, GROUP] == key[0] and meta[slot, KEY0] == key[1]
                and meta[slot, KEY0 + 1] == key[2] and meta[slot, KEY0 + 2] == key[3]
                and meta[slot, KEY0 + 3] == key[4] and meta[slot, KEY0 + 4] == key[5]):
            return slot
        i = (i + 1) & mask


@numba.njit(cache=True)
def _place(buckets: np.ndarray, h: int, slot: int) -> None:
    mask = len(buckets) - 1
    i = h & mask
    while buckets[i, 0] != 0:
        i = (i + 1) & mask
    buckets[i, 0] = slot + 1
    buckets[i, 1] = h


@numba.njit(cache=True, inline="always")
def _stays(hole: int, at: int, home: int) -> bool:
    """Backward-shift deletion in a linear-probing table: whether the entry at `at`, whose probe run starts
    at `home`, must stay put, the hole left at `hole` not lying on its run (its home is cyclically in
    (hole, at])."""
    return (hole < home <= at) if hole <= at else (home > hole or home <= at)


@numba.njit(cache=True)
def _unplace(buckets: np.ndarray, h: int, slot: int) -> None:
    """Drop a slot's bucket, shifting later entries of its probe run back so that no lookup stops early."""
    mask = len(buckets) - 1
    i = h & mask
    while buckets[i, 0] != slot + 1:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        if buckets[j, 0] == 0:
            break
        if _stays(i, j, buckets[j, 1] & mask):
            continue
        buckets[i, 0], buckets[i, 1] = buckets[j, 0], buckets[j, 1]
        i = j
    buckets[i, 0] = 0


# ---- the pool: each key's clicks in one region of one table ----------------------------------------------
@numba.njit(cache=True)
def _alloc(tables, pool: np.ndarray, sc: np.ndarray, size: int) -> int:
    """A free region of MIN_REGION << size clicks: its first column. Growing the pool replaces
    tables[POOL] and sets sc[GREW], so that callers holding the pool take the new one."""
    head = sc[FREE_REGION0 + size]
    if head >= 0:
        sc[FREE_REGION0 + size] = pool[0, head]
        return head
    width = MIN_REGION << size
    top = sc[POOL_TOP]
    if top + width > pool.shape[1]:
        grown = np.zeros((pool.shape[0], max(2 * pool.shape[1], top + width)), np.int64)
        grown[:, :top] = pool[:, :top]
        tables[POOL] = grown
        sc[GREW] = 1
    sc[POOL_TOP] = top + width
    return top


@numba.njit(cache=True, inline="always")
def _release(pool: np.ndarray, sc: np.ndarray, base: int, size: int) -> None:
    pool[0, base] = sc[FREE_REGION0 + size]
    sc[FREE_REGION0 + size] = base


# ---- counted windows: a busy key's distinct counts follow its window instead of rescanning it --------------
@numba.njit(cache=True)
def _count_home(tag: int, value: int, mask: int) -> int:
    h = (tag * GOLDEN) ^ value
    h *= GOLDEN
    h ^= h >> 29
    return h & mask


@numba.njit(cache=True)
def _count_add(tables, sc: np.ndarray, tag: int, value: int) -> int:
    """One more click with `value` in the window `tag`; 1 if the value is new to it."""
    counts = tables[COUNTS]
    if 2 * (sc[N_COUNTS] + 1) > len(counts):  # keep the table at most half full
        grown = np.zeros((2 * len(counts), 3), np.int64)
        gmask = len(grown) - 1
        for i in range(len(counts)):
            if counts[i, 0] != 0:
                j = _count_home(counts[i, 0] - 1, counts[i, 1], gmask)
                while grown[j, 0] != 0:
                    j = (j + 1) & gmask
                grown[j] = counts[i]
        tables[COUNTS] = grown
        counts = grown
    mask = len(counts) - 1
    i = _count_home(tag, value, mask)
    while counts[i, 0] != 0:
        if counts[i, 0] == tag + 1 and counts[i, 1] == value:
            counts[i, 2] += 1
            return 0
        i = (i + 1) & mask
    counts[i, 0], counts[i, 1], counts[i, 2] = tag + 1, value, 1
    sc[N_COUNTS] += 1
    return 1


@numba.njit(cache=True)
def _count_remove(tables, sc: np.ndarray, tag: int, value: int) -> int:
    """One click with `value` fewer in the window `tag` (it must be there); 1 if the value left it."""
    counts = tables[COUNTS]
    mask = len(counts) - 1
    i = _count_home(tag, value, mask)
    while counts[i, 0] != tag + 1 or counts[i, 1] != value:
        if counts[i, 0] == 0:
            raise RuntimeError("a counted window lost step with its key's clicks")
        i = (i + 1) & mask
    counts[i, 2] -= 1
    if counts[i, 2] > 0:
        return 0
    j = i  # backward-shift deletion, as in _unplace
    while True:
        j = (j + 1) & mask
        if counts[j, 0] == 0:
            break
        if _stays(i, j, _count_home(counts[j, 0] - 1, counts[j, 1], mask)):
            continue
        counts[i, 0], counts[i, 1], counts[i, 2] = counts[j, 0], counts[j, 1], counts[j, 2]
        i = j
    counts[i, 0] = 0
    sc[N_COUNTS] -= 1
    return 1


@numba.njit(cache=True)
def _counted_distinct(tables, sc: np.ndarray, meta: np.ndarray, windows: np.ndarray, slot: int, k: int,
                      pool: np.ndarray, r: int, lo: int, hi: int) -> int:
    """Distinct values in the slot's clicks [lo, hi) of pool row r, moving the slot's counted window k there:
    a click's window moves by a click or two from the previous one's, so this costs a few table updates, not
    a scan."""
    base = meta[slot, BASE]
    c = 3 * k
    if meta[slot, COUNTED] == 0:
        meta[slot, COUNTED] = 1
        windows[slot, 0::3] = -1
    first, end, n = windows[slot, c], windows[slot, c + 1], windows[slot, c + 2]
    if first < 0:
        first = end = lo
        n = 0
    tag = slot * MAX_DISTINCTS + k
    while end < hi:  # grow before shrinking, so that the window never turns inside out
        n += _count_add(tables, sc, tag, pool[r, base + end])
        end += 1
    while first > lo:
        first -= 1
        n += _count_add(tables, sc, tag, pool[r, base + first])
    while first < lo:
        n -= _count_remove(tables, sc, tag, pool[r, base + first])
        first += 1
    while end > hi:
        end -= 1
        n -= _count_remove(tables, sc, tag, pool[r, base + end])
    windows[slot, c], windows[slot, c + 1], windows[slot, c + 2] = first, end, n
    return n


@numba.njit(cache=True)
def _drop_window(tables, sc: np.ndarray, windows: np.ndarray, slot: int, k: int, pool: np.ndarray, r: int,
                 base: int) -> None:
    """Stop counting the slot's window k (values in pool row r): its clicks' values leave the counts."""
    for p in range(windows[slot, 3 * k], windows[slot, 3 * k + 1]):
        _count_remove(tables, sc, slot * MAX_DISTINCTS + k, pool[r, base + p])
    windows[slot, 3 * k] = -1


@numba.njit(cache=True)
def _forget_counts(tables, sc: np.ndarray, windows: np.ndarray, slot: int, pool: np.ndarray, base: int,
                   rows_of: np.ndarray) -> None:
    """Drop the slot's counted windows (before the slot is freed)."""
    for k in range(len(rows_of)):
        if rows_of[k] >= 0 and windows[slot, 3 * k] >= 0:
            _drop_window(tables, sc, windows, slot, k, pool, 1 + rows_of[k], base)


@numba.njit(cache=True)
def _move_counts(tables, sc: np.ndarray, windows: np.ndarray, slot: int, pool: np.ndarray, base: int,
                 rows_of: np.ndarray, s0: int) -> None:
    """The slot's live clicks [s0, end) are about to move to the start of its region: counted windows inside
    them move along, others are dropped."""
    for k in range(len(rows_of)):
        c = 3 * k
        if rows_of[k] >= 0 and windows[slot, c] >= 0:
            if windows[slot, c] >= s0:
                windows[slot, c] -= s0
                windows[slot, c + 1] -= s0
            else:
                _drop_window(tables, sc, windows, slot, k, pool, 1 + rows_of[k], base)


@numba.njit(cache=True)
def _count_inserted(tables, sc: np.ndarray, windows: np.ndarray, slot: int, rows_of: np.ndarray, pos: int,
                    ids: np.ndarray, value_fields: np.ndarray) -> None:
    """A late click goes in at pos, shifting later clicks up by one: counted windows shift or take it in."""
    for k in range(len(rows_of)):
        c = 3 * k
        if rows_of[k] >= 0 and windows[slot, c] >= 0:
            if pos < windows[slot, c]:
                windows[slot, c] += 1
                windows[slot, c + 1] += 1
            elif pos < windows[slot, c + 1]:
                windows[slot, c + 2] += _count_add(tables, sc, slot * MAX_DISTINCTS + k, ids[value_fields[rows_of[k]]])
                windows[slot, c + 1] += 1


# ---- a slot's seconds -------------------------------------------------------------------------------------
@numba.njit(cache=True, inline="always")
def _after(pool: np.ndarray, base: int, lo: int, hi: int, t: int, inclusive: bool) -> int:
    """The first position p in [lo, hi) whose second pool[0, base + p] is >= t (inclusive) or > t (else), or
    hi: np.searchsorted on the slot's region in place. A slice would be a new array view, whose two atomic
    reference counts cost more than the search itself, four times per key group and click."""
    while lo < hi:
        mid = (lo + hi) >> 1
        v = pool[0, base + mid]
        if v < t or (not inclusive and v == t):
            lo = mid + 1
        else:
            hi = mid
    return lo


# ---- recording ------------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _new_slot(tables, pool: np.ndarray, meta: np.ndarray, free: np.ndarray, buckets: np.ndarray, sc: np.ndarray,
              key: tuple, h: int) -> int:
    """A slot for a new key, with the smallest region (may grow the pool: see _alloc)."""
    if sc[N_FREE] > 0:
        sc[N_FREE] -= 1
        slot = free[sc[N_FREE], 0]
    else:
        slot = sc[N_SLOTS]
        sc[N_SLOTS] += 1
    meta[slot, BASE] = _alloc(tables, pool, sc, 0)
    meta[slot, SIZE] = 0
    meta[slot, START] = 0
    meta[slot, END] = 0
    meta[slot, COUNTED] = 0
    meta[slot, GROUP] = key[0]
    meta[slot, HASH] = h
    for f in range(5):
        meta[slot, KEY0 + f] = key[1 + f]
    _place(buckets, h, slot)
    return slot


@numba.njit(cache=True)
def _insert(tables, pool: np.ndarray, sc: np.ndarray, meta: np.ndarray, windows: np.ndarray, slot: int, t: int,
            ids: np.ndarray, value_fields: np.ndarray, rows_of: np.ndarray) -> None:
    """Place the click by its second (appending in the usual, in-order case). rows_of[k]: the value row the
    group's distinct count k reads. Moving to a bigger region may grow the pool (sc[GREW])."""
    s0, e0, base = meta[slot, START], meta[slot, END], meta[slot, BASE]
    cap = MIN_REGION << meta[slot, SIZE]
    if e0 == cap:  # full: slide the live part down, or move to a region twice the size
        if meta[slot, COUNTED]:
            _move_counts(tables, sc, windows, slot, pool, base, rows_of, s0)
        n = e0 - s0
        if s0 >= cap // 2:  # the live part and its new place do not overlap
            pool[:, base : base + n] = pool[:, base + s0 : base + e0]
        else:
            size = meta[slot, SIZE]
            moved = _alloc(tables, pool, sc, size + 1)
            pool = tables[POOL]
            pool[:, moved : moved + n] = pool[:, base + s0 : base + e0]
            _release(pool, sc, base, size)
            base = moved
            meta[slot, BASE], meta[slot, SIZE] = moved, size + 1
        s0, e0 = 0, n
        meta[slot, START] = 0
    pos = e0
    if e0 > s0 and pool[0, base + e0 - 1] > t:  # a late click
        pos = _after(pool, base, s0, e0, t, False)
        if meta[slot, COUNTED]:
            _count_inserted(tables, sc, windows, slot, rows_of, pos, ids, value_fields)
        pool[:, base + pos + 1 : base + e0 + 1] = pool[:, base + pos : base + e0].copy()
    pool[0, base + pos] = t
    for f in range(len(value_fields)):
        if value_fields[f] >= 0:
            pool[1 + f, base + pos] = ids[value_fields[f]]
    meta[slot, END] = e0 + 1


@numba.njit(cache=True)
def _evict(tables, pool: np.ndarray, meta: np.ndarray, windows: np.ndarray, fifo: np.ndarray, free: np.ndarray,
           buckets: np.ndarray, sc: np.ndarray, distinct_rows: np.ndarray, cutoff: int) -> None:
    head = sc[FIFO_HEAD]
    while head < sc[FIFO_TAIL] and fifo[head, 0] < cutoff:
        slot, gen = fifo[head, 1], fifo[head, 2]
        head += 1
        if meta[slot, GEN] != gen:  # the slot was freed since (and maybe reused)
            continue
        s0, e0, base = meta[slot, START], meta[slot, END], meta[slot, BASE]
        s0 = _after(pool, base, s0, e0, cutoff, True)
        meta[slot, START] = s0
        if s0 == e0:  # nothing left in the window: forget the key
            if meta[slot, COUNTED]:
                _forget_counts(tables, sc, windows, slot, pool, base, distinct_rows[meta[slot, GROUP]])
            _release(pool, sc, base, meta[slot, SIZE])
            _unplace(buckets, meta[slot, HASH], slot)
            meta[slot, GEN] += 1
            meta[slot, GROUP] = -1
            free[sc[N_FREE], 0] = slot
            sc[N_FREE] += 1
    sc[FIFO_HEAD] = head


@numba.njit(cache=True)
def _record(tables, meta: np.ndarray, windows: np.ndarray, fifo: np.ndarray, free: np.ndarray, buckets: np.ndarray,
            sc: np.ndarray, group_fields: np.ndarray, value_fields: np.ndarray, distinct_rows: np.ndarray,
            ids: np.ndarray, t: int, floor: int, retention: int, slots: np.ndarray) -> None:
    """Record one click under each key group; slots[g] gets the group's slot. score_batch has already set
    late clicks aside."""
    pool = tables[POOL]
    if t > sc[WATERMARK]:
        sc[WATERMARK] = t
        _evict(tables, pool, meta, windows, fifo, free, buckets, sc, distinct_rows, min(t, floor) - retention)
    for g in range(len(group_fields)):
        key = _key(ids, group_fields[g], g)
        h = _hash(key)
        slot = _find(meta, buckets, key, h)
        if slot < 0:
            slot = _new_slot(tables, pool, meta, free, buckets, sc, key, h)
            if sc[GREW]:
                pool = tables[POOL]
                sc[GREW] = 0
        _insert(tables, pool, sc, meta, windows, slot, t, ids, value_fields[g], distinct_rows[g])
        if sc[GREW]:
            pool = tables[POOL]
            sc[GREW] = 0
        tail = sc[FIFO_TAIL]
        fifo[tail, 0], fifo[tail, 1], fifo[tail, 2] = t, slot, meta[slot, GEN]
        sc[FIFO_TAIL] = tail + 1
        slots[g] = slot


# ---- reading --------------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _distinct(marks: np.ndarray, sc: np.ndarray, pool: np.ndarray, r: int, base: int, lo: int, hi: int) -> int:
    """Distinct values in pool row r over the slot's clicks [lo, hi) (its region starts at base)."""
    if sc[STAMP] == 2**31 - 1:  # stamps are int32: start the table over before they wrap
        marks[:] = 0
        sc[STAMP] = 0
    sc[STAMP] += 1
    stamp = np.int32(sc[STAMP])
    n = 0
    big = 0
    for p in range(base + lo, base + hi):
        v = pool[r, p]
        if v < MARKS:
            if marks[v] != stamp:
                marks[v] = stamp
                n += 1
        else:
            big += 1
    if big:  # ids past the mark table (an ip): count those by sorting
        part = pool[r, base + lo : base + hi]
        wide = np.sort(part[part >= MARKS])
        n += 1 + int(np.sum(wide[1:] != wide[:-1]))
    return n


@numba.njit(cache=True)
def _read(tables, pool: np.ndarray, meta: np.ndarray, windows: np.ndarray, buckets: np.ndarray, plan: tuple,
          marks: np.ndarray, sc: np.ndarray, ids: np.ndarray, t: int, floor: int, slots: np.ndarray,
          hour_table: np.ndarray, cuts: np.ndarray, out: np.ndarray) -> None:
    """One click's features from the clicks in [max(t - window, floor), t - 1]; slots[g] is the group's slot
    when recording found it, else -1 (looked up here). floor is far past the horizon except for late clicks."""
    group_fields, offsets, n_offsets, bands, prevs, dists, hour, group_at = plan
    for g in range(len(group_fields)):
        slot = slots[g]
        if slot < 0:
            key = _key(ids, group_fields[g], g)
            slot = _find(meta, buckets, key, _hash(key))
        s0 = e0 = end = base = 0
        if slot >= 0:
            s0, e0, base = meta[slot, START], meta[slot, END], meta[slot, BASE]
        if e0 == s0:
            cuts[:] = 0
        else:
            end = _after(pool, base, s0, e0, t, True)  # clicks before this second
            cuts[0] = end
            for k in range(1, n_offsets[g]):
                cuts[k] = _after(pool, base, s0, end, max(t - offsets[g, k], floor), True)
        for b in range(group_at[0, g], group_at[0, g + 1]):
            out[bands[b, 1]] = cuts[bands[b, 2]] - cuts[bands[b, 3]]
        for p in range(group_at[1, g], group_at[1, g + 1]):
            if end > s0 and pool[0, base + end - 1] >= max(t - prevs[p, 2], floor):
                out[prevs[p, 1]] = t - pool[0, base + end - 1]
            else:
                out[prevs[p, 1]] = np.nan
        for d in range(group_at[2, g], group_at[2, g + 1]):
            lo, k = cuts[dists[d, 3]], dists[d, 4]
            if end <= lo:
                out[dists[d, 1]] = 0
            elif (meta[slot, COUNTED] and windows[slot, 3 * k] >= 0) or end - lo >= sc[INCREMENTAL_FROM]:
                out[dists[d, 1]] = _counted_distinct(tables, sc, meta, windows, slot, k, pool, 1 + dists[d, 2], lo, end)
            else:
                out[dists[d, 1]] = _distinct(marks, sc, pool, 1 + dists[d, 2], base, lo, end)
    if hour[0] >= 0:
        h = (t // 3600) % 24
        out[hour[0]] = hour_table[h, 0]
        out[hour[1]] = hour_table[h, 1]


@numba.njit(cache=True)
def score_batch(tables, marks: np.ndarray, sc: np.ndarray, ids: np.ndarray, t: np.ndarray, record: np.ndarray,
                retention: int, late_by: int, hour_table: np.ndarray, out: np.ndarray) -> None:
    """Record the batch's clicks flagged in `record`, then write every click's features into out[i].

    A click more than `late_by` seconds behind the watermark (when its turn comes) is late: not recorded
    (record[i] is cleared, so the caller knows), counted if it was to be recorded, and read from the clicks
    still certainly held, those at or after the watermark minus `retention` (= horizon + late_by, so that
    every click that is not late reads its whole window)."""
    group_fields, value_fields, distinct_rows = tables[GROUP_FIELDS], tables[VALUE_FIELDS], tables[DISTINCT_ROWS]
    n_groups = len(group_fields)
    _reserve(tables, sc, n_groups * int(record.sum()))
    meta, fifo, free, buckets, windows = tables[META], tables[FIFO], tables[FREE], tables[INDEX], tables[WINDOWS]
    # A click's slots from recording serve its read: no key recorded in this batch is evicted before the reads,
    # since eviction stops short of the batch's earliest click (a batch spanning minutes must not drop, while
    # recording its later clicks, the history its earlier clicks are about to read).
    slots = np.full((len(t), n_groups), -1, np.int64)
    floor = t.min() if len(t) else 0
    floors = np.full(len(t), -(2**62), np.int64)
    for i in range(len(t)):
        if t[i] < sc[WATERMARK] - late_by:
            floors[i] = sc[WATERMARK] - retention
            if record[i]:
                sc[LATE] += 1
                record[i] = False
        elif record[i]:
            _record(tables, meta, windows, fifo, free, buckets, sc, group_fields, value_fields, distinct_rows, ids[i],
                    t[i], floor, retention, slots[i])
    plan = (group_fields, tables[OFFSETS], tables[N_OFFSETS][0], tables[BANDS], tables[PREVS], tables[DISTS],
            tables[HOUR][0], tables[GROUP_AT])
    cuts = np.zeros(tables[OFFSETS].shape[1], np.int64)
    pool = tables[POOL]
    for i in range(len(t)):
        _read(tables, pool, meta, windows, buckets, plan, marks, sc, ids[i], t[i], floors[i], slots[i], hour_table,
              cuts, out[i])


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
