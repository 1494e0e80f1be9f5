"""The fast batch engine for the spec: linear sweeps compiled with numba, behind the same parity tests.

Per key group the rows are put in (group, time) order by stable counting sorts over the time-ordered
input (each key field is one pass, and a group extends its prefix's dense codes, so (ip, app, os) reuses
(ip, app)). Every feature is then one forward sweep over that order with a pointer per window edge:
counts and time-since-previous from pointer differences, distinct counts from a per-value counter that
the window's two edges increment and decrement. Past one time sort (skipped when the input is in time
order, as click logs are) nothing is O(n log n), and nothing runs per row in Python.

`compute(..., query_from=c0)` computes features only for clicks at or after second c0 and uses the earlier
rows as history only; the out-of-core path feeds it time chunks that way.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

from attribution.features.spec import FeatureSpec

# Counting-sort buckets for one key field; wider raw ids (an ip space in the billions) are densified first.
MAX_RAW_BUCKETS = 1 << 22


@numba.njit(cache=True, nogil=True)
def _counting_sort(order: np.ndarray, key: np.ndarray, starts: np.ndarray, out: np.ndarray) -> None:
    """out = `order` stably re-ordered by key[order]; keys lie in [0, len(starts) - 1), starts is zeroed.
    (Buffers come from numpy, which asks the kernel for huge pages; numba's own allocations fault 4 KB
    pages in one at a time: filling 80 MB took 37 ms against numpy's 13 ms.)"""
    for i in order:
        starts[key[i] + 1] += 1
    for k in range(len(starts) - 1):
        starts[k + 1] += starts[k]
    for i in order:
        k = key[i]
        out[starts[k]] = i
        starts[k] += 1


@numba.njit(cache=True, nogil=True)
def _dense_codes(order: np.ndarray, prefix: np.ndarray, field: np.ndarray, codes: np.ndarray,
                 seg: np.ndarray) -> int:
    """Fills codes (per row) with dense codes of (prefix, field) numbered in `order`, which is sorted by
    (prefix, field), and seg (per position of `order`) with the first position of its group; returns the
    number of groups."""
    c = -1
    last_p, last_f = -1, -1
    start = 0
    for j in range(len(order)):
        i = order[j]
        p, f = prefix[i], field[i]
        if p != last_p or f != last_f:
            c += 1
            last_p, last_f = p, f
            start = j
        codes[i] = c
        seg[j] = start
    return c + 1


@numba.njit(cache=True, nogil=True)
def _gather(src: np.ndarray, order: np.ndarray, out: np.ndarray) -> None:
    """out[j] = src[order[j]] (numpy's fancy indexing takes a slow generic path for int32 indices)."""
    for j in range(len(order)):
        out[j] = src[order[j]]


def _in_order(src: np.ndarray, order: np.ndarray, dtype: type = np.int32) -> np.ndarray:
    out = np.empty(len(order), dtype)
    _gather(src, order, out)
    return out


@numba.njit(cache=True, nogil=True)
def _sweep(ts: np.ndarray, seg: np.ndarray, order: np.ndarray, qpos: np.ndarray, first: int, offsets: np.ndarray,
           band_edges: np.ndarray, since: np.ndarray, keep: np.ndarray, counts_out: np.ndarray,
           since_out: np.ndarray, kept: np.ndarray) -> None:
    """Counts and time-since-previous of one key group in one forward pass over its (group, time) order.

    ts/seg: second and group-start of each position. ptr[k] tracks the first position of the group at or
    after second - offsets[k] (offsets[0] == 0: the first click of the current second), so a band [s, e]
    counts ptr[s - 1] - ptr[e] and the previous click is at ptr[0] - 1. kept[i] records ptr[keep[i]] at
    every position for the distinct-count passes. Output row of input row i: qpos[i] (-1: history only), or
    i - first when qpos is empty (negative: history only).
    """
    n_off = len(offsets)
    ptr = np.zeros(n_off, np.int64)
    for j in range(len(ts)):
        s = seg[j]
        for k in range(n_off):
            ptr[k] = max(ptr[k], s)
            edge = ts[j] - offsets[k]
            while ts[ptr[k]] < edge:
                ptr[k] += 1
        for i in range(len(keep)):
            kept[i, j] = ptr[keep[i]]
        q = order[j] - first if len(qpos) == 0 else qpos[order[j]]
        if q < 0:
            continue
        for b in range(len(band_edges) // 2):
            counts_out[b, q] = ptr[band_edges[2 * b]] - ptr[band_edges[2 * b + 1]]
        before = ptr[0] - 1  # the latest click at an earlier second
        for w in range(len(since)):
            if before >= s and ts[before] >= ts[j] - since[w]:
                since_out[w, q] = ts[j] - ts[before]
            else:
                since_out[w, q] = np.nan


@numba.njit(cache=True, nogil=True)
def _distinct(seg: np.ndarray, first_now: np.ndarray, first_far: np.ndarray, values: np.ndarray, bound: int,
              order: np.ndarray, qpos: np.ndarray, first: int, out: np.ndarray) -> None:
    """Distinct values (in group order) among positions [first_far[j], first_now[j]): the group's clicks in
    [t - W, t - 1]. A per-value counter is incremented at the window's leading edge, decremented at its
    trailing edge."""
    seen = np.zeros(bound, np.int32)
    count = 0
    lo = hi = 0
    for j in range(len(seg)):
        if seg[j] == j:  # a new group: empty the counter of what the last one left in its window
            for p in range(lo, hi):
                seen[values[p]] = 0
            lo = hi = j
            count = 0
        while hi < first_now[j]:
            v = values[hi]
            if seen[v] == 0:
                count += 1
            seen[v] += 1
            hi += 1
        while lo < first_far[j]:
            v = values[lo]
            seen[v] -= 1
            if seen[v] == 0:
                count -= 1
            lo += 1
        q = order[j] - first if len(qpos) == 0 else qpos[order[j]]
        if q >= 0:
            out[q] = count


@dataclass
class _Group:
    order: np.ndarray  # row indices by (group, time)
    codes: np.ndarray  # dense group code per row
    n: int  # number of groups
    seg: np.ndarray  # per position of `order`: the first position of its group


class _Groups:
    """(group, time) orders and dense codes, each group extending its prefix's codes by one field (two
    stable counting sorts over the time-ordered rows: by the new field, then by the prefix)."""

    def __init__(self, clicks: pd.DataFrame, t: np.ndarray, pool: ThreadPoolExecutor) -> None:
        self.fields = {k: _field_codes(clicks[k].to_numpy()) for k in ("ip", "app", "device", "os", "channel")}
        self.by_time = (np.arange(len(t), dtype=np.int32) if _is_sorted(t)
                        else np.argsort(t, kind="stable").astype(np.int32))
        self.pool = pool
        self.futures: dict[tuple[str, ...], Future[_Group]] = {}

    def submit(self, keys: tuple[str, ...]) -> Future[_Group]:
        """Schedules the group after its prefixes; a worker waits only on a prefix already running (tasks
        are submitted prefix-first and run in FIFO order), so two workers cannot deadlock."""
        if keys not in self.futures:
            head = self.submit(keys[:-1]) if len(keys) > 1 else None
            self.futures[keys] = self.pool.submit(self._build, keys, head)
        return self.futures[keys]

    def _build(self, keys: tuple[str, ...], head: Future[_Group] | None) -> _Group:
        field, width = self.fields[keys[-1]]
        order = _sorted_by(self.by_time, field, width)
        codes, seg = np.empty(len(order), np.int32), np.empty(len(order), np.int32)
        if head is None:
            n = _dense_codes(order, field, field, codes, seg)
        else:
            prefix = head.result()
            order = _sorted_by(order, prefix.codes, prefix.n)  # stable: (prefix, field, time)
            n = _dense_codes(order, prefix.codes, field, codes, seg)
        return _Group(order, codes, n, seg)


def _sorted_by(order: np.ndarray, key: np.ndarray, bound: int) -> np.ndarray:
    out = np.empty_like(order)
    _counting_sort(order, key, np.zeros(bound + 1, np.int64), out)
    return out


def _is_sorted(t: np.ndarray) -> bool:
    return bool(np.all(t[1:] >= t[:-1]))


def _field_codes(col: np.ndarray) -> tuple[np.ndarray, int]:
    """Non-negative int32 codes for a key column and their exclusive bound."""
    bound = int(col.max()) + 1 if len(col) else 1
    if bound <= max(MAX_RAW_BUCKETS, 2 * len(col)) and bound < 2**31:
        return col.astype(np.int32), bound
    dense, uniques = pd.factorize(col)
    return dense.astype(np.int32), max(1, len(uniques))


def _group_features(spec: FeatureSpec, keys: tuple[str, ...], group: Future[_Group], t: np.ndarray,
                    fields: dict[str, tuple[np.ndarray, int]], qpos: np.ndarray, first: int, n_out: int) -> dict[str, np.ndarray]:
    g = group.result()
    counts = [c for c in spec.counts if c.keys == keys]
    bands = [(band, name) for c in counts for band, name in zip(c.bands, c.names())]
    since = [p for p in spec.since_previous if p.keys == keys]
    distincts = [d for d in spec.distincts if d.keys == keys]
    offsets = spec.window_offsets(keys)  # offset 0 (the click's own second) first
    at = {o: k for k, o in enumerate(offsets)}
    band_edges = np.array([at[x] for b, _ in bands for x in (b.start - 1, b.end)], np.int64)
    keep = sorted({at[0]} | {at[d.window] for d in distincts}) if distincts else []
    kept = np.empty((len(keep), len(g.order)), np.int32)
    counts_out = np.empty((len(bands), n_out), np.int32)
    since_out = np.empty((len(since), n_out), np.float64)
    _sweep(_in_order(t, g.order), g.seg, g.order, qpos, first, np.array(offsets, np.int64), band_edges,
           np.array([p.window for p in since], np.int64), np.array(keep, np.int64), counts_out, since_out, kept)
    distinct_out = np.empty((len(distincts), n_out), np.int32)
    for k, d in enumerate(distincts):
        value, bound = fields[d.of]
        # the `of` codes in group order, so the pass reads them sequentially
        _distinct(g.seg, kept[keep.index(at[0])], kept[keep.index(at[d.window])], _in_order(value, g.order), bound,
                  g.order, qpos, first, distinct_out[k])
    out = {name: counts_out[k] for k, (_, name) in enumerate(bands)}
    out.update({p.name: since_out[k] for k, p in enumerate(since)})
    out.update({d.name: distinct_out[k] for k, d in enumerate(distincts)})
    return out


def compute(clicks: pd.DataFrame, spec: FeatureSpec, threads: int | None = None,
            query_from: int | None = None) -> pd.DataFrame:
    """row_id and every feature for the clicks at or after second `query_from` (all clicks when None),
    in input order; earlier clicks serve as history only. threads defaults to one more than the CPUs:
    the kernels stall on cache misses and page faults, and a spare thread fills the stalls (10M rows on
    2 cores: 8.7 s with 2 threads, 7.3 s with 3, 8.1 s with 4)."""
    threads = threads or (os.cpu_count() or 1) + 1
    t = clicks["click_time"].to_numpy().astype(np.int64)
    t0 = int(t.min()) if len(t) else 0
    rel = (t - t0).astype(np.int32)  # seconds since the first click: half the memory traffic of int64
    # Output row q of input row i: i - first when the wanted rows are a suffix of the input (no rows, or
    # time-ordered input as the chunked paths give), else qpos[i] (-1: history only). The suffix form saves
    # a random read per row and group: the qpos form doubled the kernel's time on 4M rows.
    qpos, first = np.empty(0, np.int32), 0
    if query_from is None:
        wanted, n_out = slice(None), len(t)
    elif _is_sorted(t):
        first = int(np.searchsorted(t, query_from, side="left"))
        wanted, n_out = slice(first, None), len(t) - first
    else:
        wanted = t >= query_from
        n_out = int(wanted.sum())
        qpos = np.full(len(t), -1, np.int32)
        qpos[wanted] = np.arange(n_out, dtype=np.int32)
    out: dict[str, np.ndarray] = {"row_id": clicks["row_id"].to_numpy()[wanted]}
    # The compiled kernels release the GIL, so sorts and sweeps of different key groups run on threads.
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        groups = _Groups(clicks, t, pool)
        built = {g: groups.submit(g) for g in spec.key_groups}
        jobs = [pool.submit(_group_features, spec, g, built[g], rel, groups.fields, qpos, first, n_out)
                for g in built]
        for j in jobs:
            out.update(j.result())
    if spec.hour_of_day:
        table = np.array(FeatureSpec.hour_table())
        hour = (t[wanted] // 3600) % 24
        out["hour_sin"], out["hour_cos"] = table[hour, 0], table[hour, 1]
    return pd.DataFrame(out, copy=False)  # copy=False: no block consolidation of ~35 columns


def warm_up_clicks(n: int = 64) -> pd.DataFrame:
    """A few clicks with the column types of a real call (kernels compile per argument type)."""
    ids = np.arange(n, dtype=np.int32) % 7
    return pd.DataFrame({"row_id": np.arange(n, dtype=np.int64), "ip": ids, "app": ids, "device": ids, "os": ids,
                         "channel": ids, "click_time": np.arange(n, dtype=np.int64) * 60})


def warm_up() -> None:
    """Run every kernel once on a few clicks, with the argument types of a real call: numba loads its
    registries and the on-disk cached machine code (cache=True) now, not inside the first real call."""
    from attribution.features.spec import DEFAULT_SPEC

    clicks = warm_up_clicks()
    compute(clicks, DEFAULT_SPEC, threads=1)
    compute(clicks, DEFAULT_SPEC, threads=1, query_from=len(clicks) * 30)  # the chunked paths' suffix variant
