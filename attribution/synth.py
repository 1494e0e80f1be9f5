"""Synthetic click stream with TalkingData's shape and a known probability per click.

`generate(rows, seed)` returns clicks (ip, app, device, os, channel, click_time, attributed_time,
is_attributed) plus `true_probability`, the probability the generator drew the label from, so the
Bayes-optimal ROC-AUC of any sample is `roc_auc_score(is_attributed, true_probability)`.

How the stream is made (all vectorised numpy; loops only over the few dozen bots):

* Id frequencies come from the real 100k-row Kaggle sample (DESIGN.md section 8): the top ids by count,
  then a Zipf tail over the remaining ids, so the number of distinct ids is about the full data's
  (app ~700, channel ~200, os ~800, device ~3.5k). Channel is drawn conditionally on app (each app runs
  on a few channels, as in the sample).
* Per-IP activity follows the full data, not the sample: one IP per ~650 rows, click shares lognormal
  (heavy tailed, capped), so a 2M-row stream has ~3k IPs whose busiest ones are NAT gateways with
  thousands of clicks. Normal traffic comes in user sessions (a device/os on an IP clicking a few ads,
  often the same app again within seconds); session starts follow the sample's hourly cycle (busy
  00:00-15:00 UTC, China daytime; quiet 17:00-22:00).
* The world: the ip population (activity weights and ids) is drawn once per stream from its total size and
  seed, so `generate_slices` shares one population across slices: an ip id is the same address in every
  slice. App popularity drifts over the stream's span: each listed app's click share is multiplied by
  exp(g_app * (f - 1/2)), f the fraction of the span elapsed, g_app ~ N(0, APP_DRIFT_SD) fixed per app.
* Click farms: a few bot IPs (half of them hiding on busy NAT IPs) fire bursts of hundreds of clicks within
  minutes on one to three (app, channel) pairs with a fixed device/os; a farm never installs (p = 0).
* The label, for an ordinary click: logit p = intercept + effects of app, channel, os and device (top ids;
  the rest share a base) + history terms a click-time feature pipeline can see: whether the (ip, device,
  os, app) clicked before within 8 h and how long ago, the (ip, app) clicks in the past 5 minutes (a user
  clicking an ad again and again is closer to installing, up to BURST_CAP clicks; hundreds of them are a
  farm's) and the past hour, the ip's clicks in the past 5 min and 8 h. History uses only strictly earlier
  seconds (DESIGN.md section 3), the exact bands of features/spec.py.
* Install once, and the install ends the burst: per (ip, device, os, app) the first click whose label
  draw succeeds is the install; the user stops, so that user's later clicks on the app in the same
  session are dropped (the attributed click is the last click of its burst, as in TalkingData), and the
  group's clicks in later sessions have p = 0 (already installed). The history terms are computed on the
  planned stream before those drops, so `true_probability` is exactly the probability each label was
  drawn from; a click-time pipeline recomputing them on the output differs only where a dropped click
  was in a window (measured on 200k rows: 17% of ordinary clicks, 98% of all within 0.016 in log-odds). `generate(rows)` returns exactly `rows` clicks: it plans a few more
  and trims the latest.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from attribution.schema import TIME_FORMAT, to_epoch

COLUMNS = (
    "ip", "app", "device", "os", "channel", "click_time", "attributed_time", "is_attributed", "true_probability",
)

# ---- calibration tables (measured on train_sample.csv, 100k rows; counts per 100k) --------------------
APP_COUNTS = {3: 18279, 12: 13198, 2: 11737, 9: 8992, 15: 8595, 18: 8315, 14: 5359, 1: 3135, 13: 2422, 8: 2004,
              21: 1979, 11: 1927, 26: 1633, 23: 1454, 6: 1303, 64: 1079, 7: 981, 20: 911, 25: 804, 28: 720,
              24: 704, 27: 696, 19: 478, 10: 388, 22: 386, 17: 380, 29: 360, 32: 286, 5: 188, 151: 109,
              36: 102, 150: 73, 4: 58, 47: 53, 56: 50, 35: 49, 55: 48, 58: 44, 94: 40, 37: 37, 45: 36, 72: 16}
CHANNEL_COUNTS = {280: 8114, 245: 4802, 107: 4543, 477: 3960, 134: 3224, 259: 3130, 265: 3013, 153: 2954,
                  178: 2936, 121: 2472, 205: 2369, 145: 1964, 442: 1941, 459: 1921, 379: 1833, 439: 1528,
                  128: 1486, 466: 1483, 135: 1473, 480: 1468, 469: 1458, 489: 1426, 237: 1408, 122: 1366,
                  140: 1328, 219: 1303, 137: 1245, 435: 1220, 232: 1211, 101: 1180, 334: 1074, 409: 1053,
                  328: 1027, 452: 930, 377: 847, 424: 821, 236: 787, 130: 782, 115: 776, 215: 772}
OS_COUNTS = {19: 23870, 13: 21223, 17: 5232, 18: 4830, 22: 4039, 10: 2816, 8: 2775, 6: 2520, 15: 2396, 20: 2347,
             9: 2341, 25: 2248, 16: 1691, 37: 1589, 3: 1576, 41: 1348, 14: 1312, 1: 1185, 12: 1103, 23: 1042,
             27: 1008, 32: 915, 35: 914, 47: 789, 53: 759, 11: 752, 28: 704, 30: 676, 26: 482, 31: 426, 2: 397,
             36: 392, 40: 387, 49: 334, 4: 303, 0: 199, 42: 195, 24: 194, 43: 190}
# Devices of normal users; 3032/3543/3866 (with os 607/748/866 in the sample) are left to the bots.
DEVICE_COUNTS = {1: 94338, 2: 4345, 0: 541, 59: 12, 6: 8}
# (id space, distinct ids in the full data, Zipf exponent of the tail, share of rows in the tail)
_TAILS = {"app": (800, 706, 1.3, 0.006), "channel": (500, 202, 1.0, 0.18), "os": (960, 800, 1.3, 0.02),
          "device": (4200, 3500, 1.2, 0.0015)}
# Channels each app runs on (share of the app's clicks); the rest of an app's clicks use the global mix.
APP_CHANNELS = {
    3: [(280, 0.43), (137, 0.05), (424, 0.04), (489, 0.04), (480, 0.04), (409, 0.04)],
    12: [(178, 0.2), (265, 0.18), (245, 0.13), (259, 0.11), (328, 0.08), (140, 0.05)],
    2: [(477, 0.17), (237, 0.12), (205, 0.11), (435, 0.1), (219, 0.08), (469, 0.08)],
    9: [(466, 0.14), (134, 0.13), (334, 0.12), (442, 0.09), (215, 0.09), (232, 0.07)],
    15: [(245, 0.37), (315, 0.08), (265, 0.08), (3, 0.06), (140, 0.06), (386, 0.05)],
    18: [(107, 0.5), (121, 0.2), (439, 0.12), (134, 0.11)],
    14: [(379, 0.17), (401, 0.11), (463, 0.1), (480, 0.09), (442, 0.09), (349, 0.08)],
    1: [(134, 0.21), (153, 0.16), (135, 0.08), (125, 0.07), (377, 0.06), (115, 0.05)],
    13: [(477, 0.67), (400, 0.18), (469, 0.14)], 8: [(145, 0.85), (259, 0.08)], 21: [(128, 0.72), (232, 0.27)],
    11: [(319, 0.2), (219, 0.11), (173, 0.11), (469, 0.1), (487, 0.1), (122, 0.1)],
    26: [(121, 0.48), (266, 0.31), (477, 0.2)], 23: [(153, 0.97)], 6: [(459, 0.65), (125, 0.34)],
    64: [(459, 1.0)], 7: [(101, 1.0)], 20: [(259, 0.68), (478, 0.31)], 25: [(259, 1.0)], 28: [(135, 0.99)],
    24: [(105, 0.66), (178, 0.34)], 27: [(153, 0.63), (122, 0.37)], 19: [(213, 0.57), (347, 0.29), (343, 0.05)],
    10: [(377, 0.44), (113, 0.28), (317, 0.26)], 22: [(116, 0.8), (496, 0.2)],
    17: [(280, 0.74), (128, 0.14), (134, 0.12)], 29: [(343, 0.56), (213, 0.31), (210, 0.06)],
    32: [(376, 0.96)], 5: [(377, 0.88), (113, 0.1)], 151: [(347, 1.0)], 36: [(373, 0.49), (110, 0.47)],
    150: [(110, 0.99)], 4: [(101, 1.0)], 47: [(484, 1.0)], 56: [(406, 1.0)], 35: [(21, 0.69), (274, 0.31)],
    55: [(453, 0.54), (406, 0.46)], 58: [(120, 0.5), (347, 0.48)], 94: [(361, 1.0)], 37: [(21, 0.97)],
    45: [(411, 0.56), (5, 0.19), (419, 0.14), (213, 0.06)], 72: [(101, 1.0)],
}
# Share of clicks per UTC hour 0..23, times 24 (sample; each hour of day is covered three times there).
HOUR_WEIGHT = np.array([1.36, 1.22, 1.23, 1.26, 1.45, 1.30, 1.22, 1.22, 1.10, 1.17, 1.32, 1.28, 1.28, 1.35,
                        1.33, 1.19, 0.91, 0.52, 0.28, 0.21, 0.17, 0.21, 0.48, 0.93])

# ---- traffic shape -------------------------------------------------------------------------------------
ROWS_PER_IP = 650            # full data: 184.9M rows / 277k ips
IP_SIGMA = 2.0               # lognormal spread of per-IP click shares
IP_MAX_MULTIPLE = 40.0       # an IP clicks at most 40x the average (~26k clicks in 4 days)
SESSION_MEAN_CLICKS = 3.0
REPEAT_APP = 0.45            # next click in a session is on the same app (and channel)
REPEAT_GAP_S, NEW_GAP_S = 20.0, 150.0
PRIMARY_USER = 0.6           # a session on an IP is its usual device/os
BOT_SHARE = 0.06             # share of rows from bots
BOT_BURST_CLICKS = (80, 600)
BOT_BURST_SECONDS = (60, 600)
BOT_DEVICES = [(1, 19, 0.45), (1, 13, 0.3), (3032, 607, 0.12), (3543, 748, 0.08), (3866, 866, 0.05)]
BOT_PAIRS = [(3, 280), (3, 489), (12, 178), (12, 265), (2, 477), (2, 205), (9, 466), (9, 134), (15, 245),
             (15, 315), (18, 107), (18, 121), (14, 379), (14, 463), (1, 134), (13, 477), (21, 128), (26, 121)]

# ---- conversion model (logit scale) -----------------------------------------------------------------
# Conversion of a first click by an ordinary user, per app; the tail of apps shares TAIL_APP_RATE.
APP_RATE = {19: 0.20, 35: 0.50, 29: 0.09, 10: 0.07, 5: 0.10, 45: 0.35, 72: 0.35,
            9: 1.3e-3, 18: 8e-4, 8: 3e-3, 11: 1.5e-3, 3: 3e-4, 15: 3e-4,
            12: 1e-4, 2: 5e-5, 14: 5e-5, 1: 5e-5, 13: 5e-5, 21: 5e-5, 26: 1e-4, 23: 5e-5, 6: 5e-5, 64: 5e-5}
TAIL_APP_RATE = 4e-3
# Channel and os effects on the busiest ids (each thousands of clicks per million: learnable).
CHANNEL_EFFECT = {280: -0.6, 245: 0.5, 107: -0.4, 477: 0.6, 134: 0.4, 259: -0.5, 265: 0.5, 153: -0.4,
                  178: 0.7, 121: -0.6, 213: 0.8, 101: -0.7, 466: 0.5, 128: -0.5}
OS_EFFECT = {19: 0.3, 13: -0.3, 17: 0.4, 18: -0.4, 22: 0.5, 10: -0.5, 8: 0.6, 6: -0.6}
DEVICE_EFFECT = {1: 0.0, 2: -1.0, 0: 1.0, 3032: -3.0, 3543: -3.0, 3866: -3.0}
OTHER_DEVICE_EFFECT = 0.0
INTERCEPT = 2.8            # calibrated so that the overall rate is ~0.25%
FIRST_CLICK = 1.0            # no (ip, device, os, app) click in the past 8 h
REPEAT_PENALTY, REPEAT_DECAY_S = 0.8, 900.0
BURST_STEP, BURST_CAP = 1.2, 3   # per earlier (ip, app) click in the past 5 minutes, up to BURST_CAP of them
APP_DRIFT_SD = 1.0               # spread of the apps' log click-share change over the span
# Penalties per log1p(clicks) in the spec's bands: ip [t-300, t-1]; (ip, app) [t-300, t-1] and
# [t-3600, t-301]; ip [t-28800, t-3601]. Additive per band, so each is one feature of the spec.
IP_5MIN, IPAPP_5MIN, IPAPP_1H, IP_8H = 0.6, 0.4, 0.3, 0.6
DELAY_MIX = ((0.55, 60.0, 1.0), (0.45, 4000.0, 1.3))   # (weight, median seconds, log-sd)

MAX_WINDOW = 28800


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _categorical(counts: dict[int, int], total: float, tail: tuple[int, int, float, float], exclude=()):
    """Ids and probabilities: the listed ids as measured, plus a Zipf tail over other ids of the space."""
    space, distinct, s, tail_mass = tail
    ids = np.fromiter(counts, dtype=np.int64)
    p = np.array([counts[i] for i in counts], dtype=np.float64) / total
    p *= (1.0 - tail_mass) / p.sum()
    taken = set(counts) | set(exclude)
    # A fixed (seed-independent) choice of which other ids exist, lower ids more frequent (like Kaggle's).
    free = np.array([i for i in range(space) if i not in taken], dtype=np.int64)
    k = max(0, min(len(free), distinct - len(ids)))
    tail_ids = np.sort(np.random.default_rng(20171106).choice(free, size=k, replace=False))
    w = 1.0 / np.arange(1, k + 1) ** s
    ids = np.concatenate([ids, tail_ids])
    p = np.concatenate([p, tail_mass * w / w.sum()])
    return ids, np.cumsum(p) / p.sum()


_APP = _categorical(APP_COUNTS, 1e5, _TAILS["app"])
_CHANNEL = _categorical(CHANNEL_COUNTS, 1e5, _TAILS["channel"])
_OS = _categorical(OS_COUNTS, 1e5, _TAILS["os"], exclude=(607, 748, 866))
_DEVICE = _categorical(DEVICE_COUNTS, 1e5, _TAILS["device"], exclude=(3032, 3543, 3866))


def _draw(table: tuple[np.ndarray, np.ndarray], u: np.ndarray) -> np.ndarray:
    ids, cdf = table
    return ids[np.minimum(np.searchsorted(cdf, u, side="right"), len(ids) - 1)]


def _lookup(effects: dict[int, float], default: float = 0.0) -> np.ndarray:
    table = np.full(1 << 16, default)
    for k, v in effects.items():
        table[k] = v
    return table


_APP_LOGIT = _lookup({a: _logit(r) - _logit(TAIL_APP_RATE) for a, r in APP_RATE.items()})
_CHANNEL_LOGIT = _lookup(CHANNEL_EFFECT)
_OS_LOGIT = _lookup(OS_EFFECT)
_DEVICE_LOGIT = _lookup(DEVICE_EFFECT, OTHER_DEVICE_EFFECT)
# Per app: channel ids and cumulative shares (the remainder goes to the global channel mix), as arrays.
_AC_APPS = np.array(sorted(APP_CHANNELS), dtype=np.int64)
_AC_WIDTH = max(len(v) for v in APP_CHANNELS.values())
_AC_IDS = np.zeros((len(_AC_APPS) + 1, _AC_WIDTH), dtype=np.int64)
_AC_CUM = np.zeros((len(_AC_APPS) + 1, _AC_WIDTH))       # last row: apps without a list
for _r, _a in enumerate(_AC_APPS):
    _ch = APP_CHANNELS[int(_a)]
    _AC_IDS[_r, : len(_ch)] = [c for c, _ in _ch]
    _AC_CUM[_r] = np.cumsum([w for _, w in _ch] + [0.0] * (_AC_WIDTH - len(_ch)))


def _channels_for(app: np.ndarray, u: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Channel of each click given its app: u in [0,1) picks from the app's list, else `fallback`."""
    row = np.searchsorted(_AC_APPS, app)
    row = np.where((row < len(_AC_APPS)) & (_AC_APPS[np.minimum(row, len(_AC_APPS) - 1)] == app), row, len(_AC_APPS))
    col = (u[:, None] >= _AC_CUM[row]).sum(axis=1)           # first cumulative share above u
    inside = col < _AC_WIDTH
    picked = _AC_IDS[row, np.minimum(col, _AC_WIDTH - 1)]
    inside &= u < _AC_CUM[row, -1]
    return np.where(inside, picked, fallback)


def _hour_slots(start: int, span: int) -> tuple[np.ndarray, np.ndarray]:
    """Lengths (seconds) of the hour slots covering [start, start + span) and each slot's click weight."""
    n_slots = int(np.ceil(span / 3600))
    k = np.arange(n_slots)
    slot_len = np.minimum(3600, span - k * 3600).astype(np.float64)
    hours = ((start + k * 3600) // 3600) % 24
    return slot_len, HOUR_WEIGHT[hours] * slot_len


def _cycle_times(rng: np.random.Generator, n: int, start: int, span: int) -> np.ndarray:
    """n times (float seconds) in [start, start + span) following the hourly cycle."""
    slot_len, weight = _hour_slots(start, span)
    cdf = np.cumsum(weight)
    slot = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(slot_len) - 1)
    return start + slot * 3600.0 + rng.random(n) * slot_len[slot]


def _is_sorted(t: np.ndarray) -> bool:
    return bool(len(t) < 2 or (t[1:] >= t[:-1]).all())


def history(group: np.ndarray, t: np.ndarray, bands=((1, 300), (301, 3600), (3601, MAX_WINDOW)), since=True):
    """Per row: clicks of the same group in each band [t - end, t - start] of earlier seconds, and seconds
    since the group's latest click in [t - MAX_WINDOW, t - 1] (NaN if none). `group` is any int64 key;
    t is epoch seconds. Sort + searchsorted on (group rank, time), no per-row Python."""
    n = len(t)
    order = np.argsort(group, kind="stable") if _is_sorted(t) else np.lexsort((t, group))
    gs, ts = group[order], t[order]
    rank = np.zeros(n, dtype=np.int64)
    comb = rank
    if n:
        np.cumsum(gs[1:] != gs[:-1], out=rank[1:])
        t0 = int(ts.min())
        width = int(ts.max()) - t0 + MAX_WINDOW + 2
        comb = rank * width + (ts - t0 + MAX_WINDOW + 1)      # a band never reaches the previous group
    # older[d] = sorted position of the group's first click at second >= t - d: the rows before it are
    # older clicks of the group (or other groups), so a band [t-b, t-a] holds older[a-1] - older[b] of them.
    offsets = {a - 1 for a, _ in bands} | {b for _, b in bands} | ({0} if since else set())
    older = {d: np.searchsorted(comb, comb - d, side="left") for d in sorted(offsets)}
    out: dict = {}
    for a, b in bands:
        vals = np.empty(n, dtype=np.int64)
        vals[order] = older[a - 1] - older[b]
        out[(a, b)] = vals
    if since:
        prev = older[0] - 1
        ok = prev >= 0
        prev = np.maximum(prev, 0)
        gap = (ts - ts[prev]).astype(np.float64)
        ok &= (rank[prev] == rank) & (gap <= MAX_WINDOW)
        vals = np.empty(n)
        vals[order] = np.where(ok, gap, np.nan)
        out["since"] = vals
    return out


def true_probability(app, device, os, channel, since_user_app, ip_5min, ipapp_5min, ipapp_1h, ip_8h) -> np.ndarray:
    """The generator's conversion model for an ordinary click that has not installed yet: a function of
    the click's ids and of the ip's earlier clicks only (farms and installed users have p = 0).

    since_user_app: seconds since the previous click of the same (ip, device, os, app) within 8 h (NaN if
    none); ip_5min: the ip's clicks in [t-300, t-1]; ipapp_5min, ipapp_1h: the (ip, app)'s clicks in
    [t-300, t-1] and [t-3600, t-301]; ip_8h: the ip's clicks in [t-28800, t-3601]. These are exactly the
    features secs_since_prev_ip_device_os_app, clicks_ip_1s_300s, clicks_ip_app_1s_300s,
    clicks_ip_app_301s_3600s and clicks_ip_3601s_28800s of attribution.features.spec.DEFAULT_SPEC."""
    z = INTERCEPT + _logit(TAIL_APP_RATE) + _APP_LOGIT[app] + _CHANNEL_LOGIT[channel] + _OS_LOGIT[os]
    z = z + _DEVICE_LOGIT[device]
    first = np.isnan(since_user_app)
    z = z + np.where(first, FIRST_CLICK, -REPEAT_PENALTY * np.exp(-np.nan_to_num(since_user_app) / REPEAT_DECAY_S))
    z = z + BURST_STEP * np.minimum(ipapp_5min, BURST_CAP)
    z = z - IP_5MIN * np.log1p(ip_5min) - IPAPP_5MIN * np.log1p(ipapp_5min) - IPAPP_1H * np.log1p(ipapp_1h)
    z = z - IP_8H * np.log1p(ip_8h)
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class World:
    """What every slice of one stream shares: the ip population (activity weights, ids; the last MAX_BOTS
    ids are the farms' own addresses) and the span over which app popularity drifts."""

    ip_weight: np.ndarray
    ip_ids: np.ndarray
    start: int
    span: int

    @property
    def n_ips(self) -> int:
        return len(self.ip_weight)

    @classmethod
    def of(cls, rows: int, seed: int, start: int, span: int) -> World:
        rng = np.random.default_rng([seed, 0x1D])
        n_ips = max(8, round(rows / ROWS_PER_IP))
        # Click shares: lognormal in units of the population mean (per-IP activity does not depend on rows)
        w = np.minimum(rng.lognormal(-IP_SIGMA**2 / 2, IP_SIGMA, n_ips), IP_MAX_MULTIPLE)
        space = max(370_000, 2 * (n_ips + MAX_BOTS))
        ids = rng.choice(np.arange(1, space + 1, dtype=np.int64), size=n_ips + MAX_BOTS, replace=False)
        return cls(w / w.sum(), ids, start, span)


MAX_BOTS = 48
# Per app: its log click-share change over the whole span (fixed, like the id tables).
_APP_DRIFT = np.zeros(1 << 16)
_APP_DRIFT[np.fromiter(APP_COUNTS, np.int64)] = np.random.default_rng(20171109).normal(0, APP_DRIFT_SD, len(APP_COUNTS))


def _drifting_apps(rng: np.random.Generator, t: np.ndarray, world: World) -> np.ndarray:
    """One app per time in t, from the id table re-weighted by each app's drift at that time (rejection)."""
    f = (t - world.start) / max(1, world.span) - 0.5
    app = np.zeros(len(t), dtype=np.int64)
    todo = np.arange(len(t))
    while len(todo):
        cand = _draw(_APP, rng.random(len(todo)))
        g = _APP_DRIFT[cand]
        ok = rng.random(len(todo)) < np.exp(g * f[todo] - np.abs(g) * 0.5)
        app[todo[ok]] = cand[ok]
        todo = todo[~ok]
    return app


def _sessions(rng: np.random.Generator, n: int, world: World, start: int, span: int):
    """Ordinary traffic: n clicks in user sessions. Returns ip index, app, device, os, channel, time and
    session number."""
    if n == 0:
        return tuple(np.zeros(0, np.int64) for _ in range(7))
    n_ips, ip_cdf = world.n_ips, np.cumsum(world.ip_weight)
    lens = rng.geometric(1.0 / SESSION_MEAN_CLICKS, size=int(n / SESSION_MEAN_CLICKS * 1.2) + 16)
    while lens.sum() < n:
        lens = np.concatenate([lens, rng.geometric(1.0 / SESSION_MEAN_CLICKS, size=len(lens) // 2 + 16)])
    ends = np.cumsum(lens)
    k = int(np.searchsorted(ends, n))                        # session k holds the n-th click
    lens = lens[: k + 1].copy()
    lens[-1] -= ends[k] - n
    n_sess = len(lens)
    first = np.zeros(n, dtype=bool)
    first_pos = np.cumsum(lens) - lens
    first[first_pos] = True
    sess = np.cumsum(first) - 1

    # Who: an IP by activity weight; its usual device/os or another user behind the same address.
    s_ip = np.minimum(np.searchsorted(ip_cdf, rng.random(n_sess), side="right"), n_ips - 1)
    ip_dev = _draw(_DEVICE, rng.random(n_ips))
    ip_os = _draw(_OS, rng.random(n_ips))
    usual = rng.random(n_sess) < PRIMARY_USER
    s_dev = np.where(usual, ip_dev[s_ip], _draw(_DEVICE, rng.random(n_sess)))
    s_os = np.where(usual, ip_os[s_ip], _draw(_OS, rng.random(n_sess)))

    # When: session start on the daily cycle; gaps short for repeats, longer for a new app (a fresh app, or
    # the same app and channel as the previous click).
    fresh = first | (rng.random(n) >= REPEAT_APP)
    gap = rng.exponential(1.0, n) * np.where(fresh, NEW_GAP_S, REPEAT_GAP_S)
    gap[first] = 0.0
    csum = np.cumsum(gap)
    offset = csum - csum[first_pos][sess]
    duration = offset[np.cumsum(lens) - 1]
    t0 = _cycle_times(rng, n_sess, start, span)
    t0 = np.maximum(start, np.minimum(t0, start + span - 1 - duration))
    t = np.floor(t0[sess] + offset).astype(np.int64)

    # What: the app popular at that time, a channel for it; repeats copy the previous click's.
    app_draw = _drifting_apps(rng, t, world)
    ch_draw = _channels_for(app_draw, rng.random(n), _draw(_CHANNEL, rng.random(n)))
    src = np.maximum.accumulate(np.where(fresh, np.arange(n), 0))
    app, channel = app_draw[src], ch_draw[src]
    return s_ip[sess], app, s_dev[sess], s_os[sess], channel, t, sess


def _bots(rng: np.random.Generator, n: int, world: World, start: int, span: int):
    """Fraud: a few IPs firing bursts of clicks on a few (app, channel) pairs with a fixed device/os."""
    n_ips, ip_w = world.n_ips, world.ip_weight
    n_bots = int(np.clip(round(2 + n_ips / 400), 2, MAX_BOTS)) if n else 0
    per_bot = rng.multinomial(n, rng.dirichlet(np.full(n_bots, 2.0))) if n_bots else np.zeros(0, np.int64)
    busy = np.argsort(-ip_w, kind="stable")[: max(1, n_ips // 20)]
    dev_cdf = np.cumsum([w for _, _, w in BOT_DEVICES])
    parts = []
    for b in range(n_bots):
        m = int(per_bot[b])
        ip = int(busy[rng.integers(len(busy))]) if b % 2 == 0 else n_ips + b   # hide on a NAT, or own IP
        d = min(int(np.searchsorted(dev_cdf, rng.random() * dev_cdf[-1], side="right")), len(BOT_DEVICES) - 1)
        device, os_ = BOT_DEVICES[d][:2]
        pairs = np.array(BOT_PAIRS)[rng.choice(len(BOT_PAIRS), size=int(rng.integers(1, 4)), replace=False)]
        sizes = rng.integers(*BOT_BURST_CLICKS, size=m // BOT_BURST_CLICKS[0] + 1)
        ends = np.cumsum(sizes)
        nb = int(np.searchsorted(ends, m)) + 1 if m else 0
        burst = np.repeat(np.arange(nb), np.diff(np.concatenate([[0], np.minimum(ends[:nb], m)])))
        dur = rng.integers(*BOT_BURST_SECONDS, size=nb)
        b0 = start + np.floor(rng.random(nb) * np.maximum(span - dur, 1)).astype(np.int64)
        t = b0[burst] + np.floor(rng.random(m) * dur[burst]).astype(np.int64)
        pair = pairs[rng.integers(len(pairs), size=m)]
        parts.append((np.full(m, ip), pair[:, 0], np.full(m, device), np.full(m, os_), pair[:, 1], t))
    if not parts:
        return tuple(np.zeros(0, np.int64) for _ in range(6))
    return tuple(np.concatenate(c) for c in zip(*parts))


def generate(
    rows: int, seed: int = 0, start: str = "2017-11-06 16:00:00", days: float = 4.0, world: World | None = None
) -> pd.DataFrame:
    """`rows` synthetic clicks over `days` days from `start` (UTC), sorted by click_time; deterministic
    for a seed. Columns: ip, app, device, os, channel, click_time (epoch s), attributed_time (Int64, NA
    unless attributed), is_attributed (int8), true_probability (float64). `world` (the ip population and
    drift span) defaults to this stream's own; generate_slices passes the whole stream's."""
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if days <= 0:
        raise ValueError(f"days must be > 0, got {days}")
    t_start = to_epoch(start)
    span = max(1, round(days * 86400))
    world = world or World.of(rows, seed, t_start, span)
    margin = 16 + rows // 400
    while True:  # plan a few more clicks than asked (installs end bursts), trim the latest
        frame = _stream(rows + margin, seed, t_start, span, world)
        if len(frame) >= rows:
            return frame.iloc[:rows].reset_index(drop=True)
        margin *= 2


def _stream(planned: int, seed: int, t_start: int, span: int, world: World) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_bot = round(planned * BOT_SHARE)
    *normal, sess = _sessions(rng, planned - n_bot, world, t_start, span)
    bots = _bots(rng, n_bot, world, t_start, span)
    ip_idx, app, device, os_, channel, t = (np.concatenate([a, b]) for a, b in zip(normal, bots))
    sess = np.concatenate([sess, np.full(n_bot, -1)])           # farms: no session, never install

    order = np.argsort(t, kind="stable")
    ip_idx, app, device, os_, channel, t, sess = (a[order] for a in (ip_idx, app, device, os_, channel, t, sess))
    ip = world.ip_ids[ip_idx]
    farm = sess < 0

    # History a click-time pipeline can see (strictly earlier seconds), on the planned stream.
    h_ip = history(ip, t, bands=((1, 300), (3601, MAX_WINDOW)), since=False)
    h_ipapp = history(ip * 1024 + app, t, bands=((1, 300), (301, 3600)), since=False)
    user_app = ((ip * 1024 + app) * 8192 + device) * 1024 + os_
    h_user = history(user_app, t, bands=(), since=True)
    p = true_probability(app, device, os_, channel, h_user["since"], h_ip[(1, 300)], h_ipapp[(1, 300)],
                         h_ipapp[(301, 3600)], h_ip[(3601, MAX_WINDOW)])
    p[farm] = 0.0

    # Install once: per (ip, device, os, app), in time order, the first successful draw is the install.
    hit = rng.random(len(t)) < p
    by = np.argsort(user_app, kind="stable")                    # time order within each group
    g, h = user_app[by], hit[by]
    new = np.r_[True, g[1:] != g[:-1]]
    start_pos = np.maximum.accumulate(np.where(new, np.arange(len(g)), 0))
    hits_before = np.cumsum(h) - h - (np.cumsum(h) - h)[start_pos]
    installed = np.empty(len(t), dtype=bool)
    installed[by] = hits_before > 0                             # the group installed on an earlier click
    install_pos = np.where(h & (hits_before == 0), np.arange(len(g)), -1)
    last_install = np.maximum.accumulate(install_pos) if len(g) else install_pos
    last_install = np.where(last_install >= start_pos, last_install, -1)  # an earlier group's is not ours
    install_sess = np.full(len(t), -2)
    install_sess[by] = np.where(last_install >= 0, sess[by][np.maximum(last_install, 0)], -2)
    y = hit & ~installed
    p = np.where(installed, 0.0, p)
    keep = ~(installed & (sess == install_sess))                # the install ends the user's burst

    comp = rng.random(len(t)) < DELAY_MIX[0][0]
    z = rng.standard_normal(len(t))
    (_, m0, s0), (_, m1, s1) = DELAY_MIX
    delay = np.where(comp, np.log(m0) + s0 * z, np.log(m1) + s1 * z)
    delay = np.maximum(1, np.round(np.exp(np.minimum(delay, 13.0)))).astype(np.int64)
    attributed = pd.array(np.where(y, t + delay, 0), dtype="Int64")
    attributed[~y] = pd.NA

    frame = pd.DataFrame({
        "ip": ip.astype(np.uint32),
        "app": app.astype(np.uint16),
        "device": device.astype(np.uint16),
        "os": os_.astype(np.uint16),
        "channel": channel.astype(np.uint16),
        "click_time": t.astype(np.int64),
        "attributed_time": attributed,
        "is_attributed": y.astype(np.int8),
        "true_probability": p.astype(np.float64),
    }, columns=list(COLUMNS))
    return frame[keep].reset_index(drop=True)


SLICE_ROWS = 20_000_000


def generate_slices(
    rows: int, seed: int = 0, start: str = "2017-11-06 16:00:00", days: float = 4.0, slice_rows: int = SLICE_ROWS
) -> Iterator[pd.DataFrame]:
    """The stream as consecutive time slices of about `slice_rows` rows, for sizes that do not fit in memory
    (the full 184.9M rows: the generator holds ~250 bytes per row while it works). Each slice is `generate`
    over whole hours of the span with its own seed and its share of the rows by the hourly cycle, in one
    World: the same ip population (ids and activity) and the same app drift over the whole span, so an ip
    id means one address throughout; only an ip's label history (its recent clicks, its installs) does not
    carry across a slice boundary. One slice (rows <= slice_rows) is exactly `generate(rows, seed, start, days)`."""
    k = max(1, -(-rows // slice_rows))
    if k == 1:
        yield generate(rows, seed=seed, start=start, days=days)
        return
    t_start = to_epoch(start)
    span = max(1, round(days * 86400))
    world = World.of(rows, seed, t_start, span)
    hours = -(-span // 3600)
    cuts = np.linspace(0, hours, k + 1).round().astype(np.int64) * 3600
    cuts[-1] = span
    _, weight = _hour_slots(t_start, span)
    share = np.array([weight[a // 3600:-(-b // 3600)].sum() for a, b in itertools.pairwise(cuts)])
    sizes = np.floor(rows * share / share.sum()).astype(np.int64)
    sizes[: rows - sizes.sum()] += 1  # hand out the remainder so the total is exact
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        when = pd.Timestamp(t_start + int(a), unit="s").strftime(TIME_FORMAT)
        yield generate(int(sizes[i]), seed=seed * 10_007 + i + 1, start=when, days=(b - a) / 86400, world=world)
