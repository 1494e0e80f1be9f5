"""A vectorised numpy kernel for the spec: the fast batch engine behind the same parity tests.

Each key group is sorted once on a packed int64 key (group code, time) and every window becomes a pair of
binary searches into that sorted array; the distinct counts use the same run-interval markers as the SQL
(see attribution/features/sql.py). Cost is O(n log n) per key group with no per-row Python.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from attribution.features.spec import DistinctCount, FeatureSpec


class _Packer:
    """Packs (group code, second) into one sortable int64; a block per group wide enough that every
    window bound and every marker (up to one window before and after) stays inside its group's block."""

    def __init__(self, t: np.ndarray, max_window: int, n_rows: int) -> None:
        self.t0 = int(t.min()) if len(t) else 0
        span = (int(t.max()) - self.t0 if len(t) else 0) + 1
        self.off = max_window + 1
        self.block = span + 2 * self.off + 1
        self.max_codes = 2**62 // self.block  # group codes must stay below this to pack
        if n_rows >= self.max_codes:
            raise OverflowError("time span x rows too large for one packed key; chunk the input by time")

    def pack(self, codes: np.ndarray, t: np.ndarray) -> np.ndarray:
        return codes.astype(np.int64) * self.block + (t - self.t0 + self.off)


class _Codes:
    """Group codes for key tuples, built by extending cached prefixes. Codes need not be dense, only
    small enough to pack with time; a prefix is re-densified (factorised) only when it would not be."""

    def __init__(self, clicks: pd.DataFrame, limit: int) -> None:
        self.cols = {k: clicks[k].to_numpy() for k in ("ip", "app", "device", "os", "channel")}
        self.limit = limit  # codes must stay below this
        self.cache: dict[tuple[str, ...], tuple[np.ndarray, int]] = {}

    def of(self, keys: tuple[str, ...]) -> tuple[np.ndarray, int]:
        """(codes, exclusive upper bound of the codes)."""
        if keys not in self.cache:
            if len(keys) == 1:
                col = self.cols[keys[0]].astype(np.int64)
                bound = int(col.max()) + 1 if len(col) else 1
                # raw ids pack as they are when small enough (saves a hash pass); else densify
                self.cache[keys] = (col, bound) if bound < self.limit else _densify(col)
            else:
                head, bound = self.of(keys[:-1])
                col = self.cols[keys[-1]].astype(np.int64)
                width = int(col.max()) + 1 if len(col) else 1
                if bound * width >= self.limit:
                    head, bound = _densify(head)
                self.cache[keys] = (head * width + col, bound * width)
        return self.cache[keys]


def _densify(codes: np.ndarray) -> tuple[np.ndarray, int]:
    dense, uniques = pd.factorize(codes)
    return dense.astype(np.int64), len(uniques)


def _group_features(
    spec: FeatureSpec, keys: tuple[str, ...], codes: np.ndarray, bound: int, values: dict[str, np.ndarray],
    t: np.ndarray, packer: _Packer,
) -> dict[str, np.ndarray]:
    """Every feature of one key group from a single sort of that group's packed keys."""
    key = packer.pack(codes, t)
    order = np.argsort(key)  # ties (same group and second) may come in any order: no feature reads it
    sk = key[order]
    sorted_out: dict[str, np.ndarray] = {}
    bounds: dict[int, np.ndarray] = {}

    def first_at_or_after(offset: int) -> np.ndarray:
        # index of the group's first click whose second is >= t - offset
        if offset not in bounds:
            bounds[offset] = np.searchsorted(sk, sk - offset, side="left")
        return bounds[offset]

    for c in (c for c in spec.counts if c.keys == keys):
        for band, name in zip(c.bands, c.names()):
            sorted_out[name] = (first_at_or_after(band.start - 1) - first_at_or_after(band.end)).astype(np.int32)
    for p in (p for p in spec.since_previous if p.keys == keys):
        before = first_at_or_after(0) - 1  # the latest click at an earlier second
        prev = sk[np.maximum(before, 0)]
        gap = (sk - prev).astype(np.float64)
        gap[(before < 0) | (prev < sk - p.window)] = np.nan
        sorted_out[p.name] = gap
    for d in (d for d in spec.distincts if d.keys == keys):
        sorted_out[d.name] = _distinct(d, codes, bound, values[d.of], t, packer, sk)
    out: dict[str, np.ndarray] = {}
    for name, vals in sorted_out.items():
        full = np.empty_like(vals)
        full[order] = vals
        out[name] = full
    return out


def _distinct(
    d: DistinctCount, codes: np.ndarray, bound: int, value: np.ndarray, t: np.ndarray, packer: _Packer,
    queries: np.ndarray,
) -> np.ndarray:
    """Distinct values per group over [t - W, t - 1] at each (sorted) packed query key."""
    vmax = int(value.max()) + 1 if len(value) else 1
    if bound * vmax < packer.max_codes:
        pair_codes = codes * vmax + value.astype(np.int64)
        pair_group = None  # pair // vmax recovers the group code
    else:
        pair_codes, pair_uniques = pd.factorize(codes * vmax + value.astype(np.int64))
        pair_codes, pair_group = pair_codes.astype(np.int64), (pair_uniques // vmax).astype(np.int64)
    packed = np.sort(packer.pack(pair_codes, t))
    seen = packed[np.r_[True, packed[1:] != packed[:-1]]]  # one per (group, value, second)
    pair = seen // packer.block
    sec = seen - pair * packer.block  # packed second (t - t0 + off)
    same = pair[1:] == pair[:-1]
    gap = np.diff(sec)
    starts = np.r_[True, ~same | (gap > d.window)]
    ends = np.r_[~same | (gap > d.window), True]
    base = (pair // vmax if pair_group is None else pair_group[pair]) * packer.block
    plus = np.sort(base[starts] + sec[starts] + 1)
    minus = np.sort(base[ends] + sec[ends] + d.window + 1)
    return (np.searchsorted(plus, queries, side="right") - np.searchsorted(minus, queries, side="right")).astype(
        np.int32
    )


def compute(clicks: pd.DataFrame, spec: FeatureSpec, threads: int = 2) -> pd.DataFrame:
    t = clicks["click_time"].to_numpy().astype(np.int64)
    packer = _Packer(t, spec.max_window, len(clicks) + 1)
    codes = _Codes(clicks, packer.max_codes)
    groups = spec.key_groups
    group_codes = {g: codes.of(g) for g in groups}
    out: dict[str, np.ndarray] = {"row_id": clicks["row_id"].to_numpy()}
    # numpy's sorts and searches release the GIL, so key groups run side by side on threads.
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        jobs = [pool.submit(_group_features, spec, g, *group_codes[g], codes.cols, t, packer) for g in groups]
        for j in jobs:
            out.update(j.result())
    if spec.hour_of_day:
        table = np.array(FeatureSpec.hour_table())
        hour = (t // 3600) % 24
        out["hour_sin"], out["hour_cos"] = table[hour, 0], table[hour, 1]
    return pd.DataFrame(out, copy=False)  # copy=False: no block consolidation of ~35 columns
