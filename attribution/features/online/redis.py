"""Online state in Redis, shared by every predictor replica: one atomic script per request, cost flat in history.

The design, its invariants and sizing are in docs/online-state.md. Layout (every key carries the hash tag
`{attr:<spec hash>}`, so a request's keys share one Redis Cluster slot; every key a script touches is declared):

    {P}meta                    hash: wm (largest second recorded), seq (event counter), late, dup
    {P}ids                     sorted set: click_id -> its second; a retried id is recorded once, and ids
                               leave with their clicks, by event time
    {P}idx                     sorted set: each key's events-set name -> its latest second, so that keys gone
                               quiet are found (and swept) by event time
    {P}e:<j>:<k1>:<k2>..       sorted set per key group j and key: score = second, member =
                               "<seq>[:<v1>:<v2>..]" (a unique event id, then the values the group's distinct
                               counts need)
    {P}w:<j>:<k1>..            hash (a busy key's counted windows): per distinct-count window w of the group
                               its counted range a<w>, b<w>; per distinct count k, n<k> (distinct values in
                               its range) and "<k>:<value>" -> clicks with that value in the range

A key with fewer than SMALL_KEY clicks is read whole (one ZRANGEBYSCORE) and its features counted in the script.
A busier key's band counts are ZCOUNTs and the time since the previous click one ZREVRANGEBYSCORE, O(log n)
each; its distinct counts are kept in its windows hash, whose ranges follow the clicks (a click's range differs
from the previous click's by the clicks between them, so a move costs a few HINCRBYs, not a scan). Same rules as MemoryStore
(attribution.features.online.state): retries skipped, late clicks not recorded and read from the retained part
of their window; tests/test_online_redis.py holds the two to equal features on the real sample, adversarial
and hypothesis streams.

Failures: a Redis that cannot be reached, or refuses a write (OOM at maxmemory, MISCONF, LOADING...), raises
StateUnavailable naming the cause; a script refused at its start (OOM) changed nothing. A connection lost
after the script was sent is retried only when every click carries a click_id (then a rerun cannot record a
click twice); otherwise the client gets a 503 and decides.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from attribution.features.online.clock import DEFAULT_MAX_SKEW
from attribution.features.online.state import StateStore, StateUnavailable, StoreStats
from attribution.features.spec import DEFAULT_SPEC, KEY_FIELDS, FeatureSpec

log = logging.getLogger(__name__)

# KEYS: meta, ids, idx, then per key of the batch its events set (and, for a group with distinct counts, its
# windows hash). ARGV: retention, late_by, the groups' plan (JSON: per group, window offsets past 0,
# since-previous windows, counted windows [[seconds, [[count k, member field]..]]..], number of distinct counts),
# the clicks (JSON, flat: second, click id or '', then per group the KEYS index of the key's events set and the
# member's value suffix), and the size under which a key is read whole. Returns the stale sweep's cut, the
# features' raw integers (per click and group: the clicks in [max(t - o, floor), t - 1] per offset o,
# t - previous second (-1: none), each distinct count) and keys gone quiet.
RECORD_AND_READ = r"""
local meta, ids, idx = KEYS[1], KEYS[2], KEYS[3]
local retention = tonumber(ARGV[1])
local late_by = tonumber(ARGV[2])
local groups = cjson.decode(ARGV[3])
local clicks = cjson.decode(ARGV[4])
local S = tonumber(ARGV[5])
local G = #groups
local stride = 2 + 2 * G
local n = #clicks / stride
local function s(x) return string.format('%d', x) end
local wm = tonumber(redis.call('HGET', meta, 'wm'))
local seq = redis.call('HINCRBY', meta, 'seq', n) - n

-- counted windows, read once per key and batch: w.lo[wi], w.hi[wi] (nil: none), w.n[k] (distinct values)
local wins = {}
local function load(b, plan)
  local w = wins[b]
  if w == nil then
    local f = {}
    for wi = 1, #plan[3] do f[#f + 1] = 'a' .. wi; f[#f + 1] = 'b' .. wi end
    for k = 1, plan[4] do f[#f + 1] = 'n' .. k end
    local r = redis.call('HMGET', KEYS[b + 1], unpack(f))
    w = {lo = {}, hi = {}, n = {}, dirty = false}
    local i = 1
    for wi = 1, #plan[3] do w.lo[wi] = tonumber(r[i]); w.hi[wi] = tonumber(r[i + 1]); i = i + 2 end
    for k = 1, plan[4] do w.n[k] = tonumber(r[i]) or 0; i = i + 1 end
    wins[b] = w
  end
  return w
end
local function split(m)
  local parts = {}
  for tok in string.gmatch(m, '[^:]+') do parts[#parts + 1] = tok end
  return parts
end
local function apply(b, w, dists, members, delta)
  local wk = KEYS[b + 1]
  for _, m in ipairs(members) do
    local parts = split(m)
    for _, d in ipairs(dists) do
      local field = d[1] .. ':' .. parts[d[2]]
      local c = redis.call('HINCRBY', wk, field, delta)
      if delta > 0 and c == 1 then w.n[d[1]] = w.n[d[1]] + 1 end
      if c <= 0 then redis.call('HDEL', wk, field); w.n[d[1]] = w.n[d[1]] - 1 end
    end
  end
  w.dirty = true
end
local function add_range(b, w, dists, lo, hi, delta)
  if lo <= hi then apply(b, w, dists, redis.call('ZRANGEBYSCORE', KEYS[b], s(lo), s(hi)), delta) end
end
-- move counted window wi of the key to [a, z]
local function move(b, w, plan, wi, a, z)
  local dists = plan[3][wi][2]
  local lo, hi = w.lo[wi], w.hi[wi]
  if lo ~= nil and (z < lo or a > hi) then  -- no overlap: start over
    if #plan[3] == 1 then
      redis.call('DEL', KEYS[b + 1])
      for _, d in ipairs(dists) do w.n[d[1]] = 0 end
    else
      add_range(b, w, dists, lo, hi, -1)
    end
    lo = nil
  end
  if lo == nil then
    add_range(b, w, dists, a, z, 1)
  else
    if a < lo then add_range(b, w, dists, a, lo - 1, 1) end
    if z > hi then add_range(b, w, dists, hi + 1, z, 1) end
    if a > lo then add_range(b, w, dists, lo, a - 1, -1) end
    if z < hi then add_range(b, w, dists, z + 1, hi, -1) end
  end
  w.lo[wi], w.hi[wi], w.dirty = a, z, true
end

-- record, in batch order
local late, dup, lo = 0, 0, nil
local floors, in_batch, touched = {}, {}, {}
for i = 1, n do
  local base = (i - 1) * stride
  local t, cid = clicks[base + 1], clicks[base + 2]
  if lo == nil or t < lo then lo = t end
  local rec = true
  if cid ~= '' then
    if in_batch[cid] or redis.call('ZSCORE', ids, cid) then dup = dup + 1; rec = false end
    in_batch[cid] = true
  end
  if wm ~= nil and t < wm - late_by then
    floors[i] = wm - retention
    if rec then late = late + 1; rec = false end
  elseif rec then
    if wm == nil or t > wm then wm = t end
    if cid ~= '' then redis.call('ZADD', ids, t, cid) end
    local member = s(seq + i)
    for j = 1, G do
      local b, suffix, plan = clicks[base + 1 + 2 * j], clicks[base + 2 + 2 * j], groups[j]
      redis.call('ZADD', KEYS[b], t, member .. suffix)
      if #plan[3] > 0 then  -- a counted window already over this second takes the click in
        local w = load(b, plan)
        for wi, win in ipairs(plan[3]) do
          if w.lo[wi] ~= nil and t >= w.lo[wi] and t <= w.hi[wi] then apply(b, w, win[2], {member .. suffix}, 1) end
        end
      end
      local last = touched[b]
      if last == nil or t > last then touched[b] = t end
    end
  end
end
-- events before the cut are no longer needed by any click that is not late (nor by this batch's)
local cut = nil
if lo ~= nil and wm ~= nil then cut = math.min(wm, lo) - retention end

-- read
local out, trim = {}, {}
for i = 1, n do
  local base = (i - 1) * stride
  local t = clicks[base + 1]
  local floor = floors[i]
  local hi = t - 1
  for j = 1, G do
    local b, plan = clicks[base + 1 + 2 * j], groups[j]
    local w = nil
    if #plan[3] > 0 then w = load(b, plan) end
    local r = nil
    if w == nil or w.lo[1] == nil then  -- a key with few clicks is read whole (older ones too, to trim them)
      r = redis.call('ZRANGEBYSCORE', KEYS[b], '-inf', s(hi), 'WITHSCORES', 'LIMIT', 0, S)
      if #r >= 2 * S then r = nil end
      if r and cut and #r > 0 and tonumber(r[2]) < cut then trim[b] = true end
    end
    if r then
      local m = #r / 2
      for _, o in ipairs(plan[1]) do
        local a = floor and math.max(t - o, floor) or t - o
        local c = 0
        for q = m, 1, -1 do if tonumber(r[2 * q]) >= a then c = c + 1 else break end end
        out[#out + 1] = c
      end
      for _, pw in ipairs(plan[2]) do
        local a = floor and math.max(t - pw, floor) or t - pw
        if m > 0 and tonumber(r[2 * m]) >= a then out[#out + 1] = t - tonumber(r[2 * m]) else out[#out + 1] = -1 end
      end
      for _, win in ipairs(plan[3]) do
        local a = floor and math.max(t - win[1], floor) or t - win[1]
        local seen, cnt = {}, {}
        for _, d in ipairs(win[2]) do seen[d[1]] = {}; cnt[d[1]] = 0 end
        for q = m, 1, -1 do
          if tonumber(r[2 * q]) < a then break end
          local parts = split(r[2 * q - 1])
          for _, d in ipairs(win[2]) do
            local v = parts[d[2]]
            if not seen[d[1]][v] then seen[d[1]][v] = true; cnt[d[1]] = cnt[d[1]] + 1 end
          end
        end
        for _, d in ipairs(win[2]) do out[#out + 1] = cnt[d[1]] end
      end
    else  -- a busy key: counts by rank, distinct counts from its counted windows
      if touched[b] then trim[b] = true end
      for _, o in ipairs(plan[1]) do
        out[#out + 1] = redis.call('ZCOUNT', KEYS[b], s(floor and math.max(t - o, floor) or t - o), s(hi))
      end
      for _, pw in ipairs(plan[2]) do
        local p = redis.call('ZREVRANGEBYSCORE', KEYS[b], s(hi), s(floor and math.max(t - pw, floor) or t - pw),
                             'WITHSCORES', 'LIMIT', 0, 1)
        out[#out + 1] = p[2] and (t - tonumber(p[2])) or -1
      end
      for wi, win in ipairs(plan[3]) do
        move(b, w, plan, wi, floor and math.max(t - win[1], floor) or t - win[1], hi)
        for _, d in ipairs(win[2]) do out[#out + 1] = w.n[d[1]] end
      end
    end
  end
end

-- write back: counted windows, eviction by event time (every window now starts at or after the cut), the index
for b, w in pairs(wins) do
  if w.dirty then
    local f = {}
    for wi = 1, #w.lo do
      if w.lo[wi] ~= nil then f[#f + 1] = 'a' .. wi; f[#f + 1] = s(w.lo[wi]); f[#f + 1] = 'b' .. wi; f[#f + 1] = s(w.hi[wi]) end
    end
    for k, v in pairs(w.n) do f[#f + 1] = 'n' .. k; f[#f + 1] = s(v) end
    if #f > 0 then redis.call('HSET', KEYS[b + 1], unpack(f)) end
  end
end
local stale = {}
if cut ~= nil then
  for b, _ in pairs(trim) do redis.call('ZREMRANGEBYSCORE', KEYS[b], '-inf', '(' .. s(cut)) end
  local pairs_ = {}
  for b, last in pairs(touched) do
    pairs_[#pairs_ + 1] = last; pairs_[#pairs_ + 1] = KEYS[b]
    if #pairs_ >= 1000 then redis.call('ZADD', idx, 'GT', unpack(pairs_)); pairs_ = {} end
  end
  if #pairs_ > 0 then redis.call('ZADD', idx, 'GT', unpack(pairs_)) end
  redis.call('ZREMRANGEBYSCORE', ids, '-inf', '(' .. s(cut))
  redis.call('HSET', meta, 'wm', s(wm))
  -- a batch adds at most G keys per click: sweeping up to 2 G per click keeps pace
  stale = redis.call('ZRANGEBYSCORE', idx, '-inf', '(' .. s(cut), 'LIMIT', 0, 64 + 2 * G * n)
end
if late > 0 then redis.call('HINCRBY', meta, 'late', late) end
if dup > 0 then redis.call('HINCRBY', meta, 'dup', dup) end
return {cut and s(cut) or '', table.concat(out, ' '), stale}
"""

# KEYS: idx, then per stale key its events set and windows hash if any (as many as ARGV[2 + i] says);
# ARGV: the cut, then per stale key its number of keys. Drops keys whose latest click is still before the cut.
SWEEP = r"""
local idx, cut = KEYS[1], tonumber(ARGV[1])
local heads, at = {}, {}
local k = 2
for i = 2, #ARGV do
  heads[#heads + 1] = KEYS[k]; at[#at + 1] = k
  k = k + tonumber(ARGV[i])
end
at[#at + 1] = k
local last = redis.call('ZMSCORE', idx, unpack(heads))  -- one call for all (Redis >= 6.2)
local dead, gone = {}, {}
for i = 1, #heads do
  if last[i] and tonumber(last[i]) < cut then  -- still quiet: its keys go
    for j = at[i], at[i + 1] - 1 do dead[#dead + 1] = KEYS[j] end
    gone[#gone + 1] = heads[i]
  end
  if #dead >= 500 then redis.call('DEL', unpack(dead)); dead = {} end
end
if #dead > 0 then redis.call('DEL', unpack(dead)) end
for i = 1, #gone, 500 do redis.call('ZREM', idx, unpack(gone, i, math.min(i + 499, #gone))) end
return #gone
"""

SWEEP_AT = 64  # stale keys known before a sweep rides along with a request
SMALL_KEY = 48  # clicks under which a key is read whole rather than counted (see docs/online-state.md)
# (redis-py maps "OOM ..." replies to OutOfMemoryError and "LOADING" to BusyLoadingError, a ConnectionError)
UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ReadOnlyError,
               redis.exceptions.OutOfMemoryError)
# Server-side refusals that mean "the state is not usable right now", not a bug in the script.
_UNAVAILABLE_REPLIES = ("OOM", "MISCONF", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS", "BUSY")


class _GroupPlan:
    """One key group as the script and the decoder see it."""

    def __init__(self, spec: FeatureSpec, j: int, group: tuple[str, ...], prefix: str) -> None:
        self.j = j
        self.key_fields = [KEY_FIELDS.index(f) for f in group]
        fields = spec.distinct_fields(group)
        self.value_fields = [KEY_FIELDS.index(f) for f in fields]
        offsets = spec.window_offsets(group)
        self.offsets = offsets[1:]
        self.prevs = [p for p in spec.since_previous if p.keys == group]
        dists = [d for d in spec.distincts if d.keys == group]
        windows = sorted({d.window for d in dists})
        # counted windows: [seconds, [[count k (1-based), member field (1-based: the event id is field 1)]]]
        self.windows = [[w, [[k + 1, fields.index(d.of) + 2] for k, d in enumerate(dists) if d.window == w]]
                        for w in windows]
        self.dists = [d for w in windows for d in dists if d.window == w]  # in output order
        self.n_keys = 2 if dists else 1
        self.width = len(self.offsets) + len(self.prevs) + len(self.dists)
        self.key_format = prefix + f"e:{j}:" + ":".join(["%d"] * len(group))  # the key's events set
        self.value_format = "".join([":%d"] * len(fields))  # the member's values after its event id

    def script_plan(self) -> list:
        return [self.offsets, [p.window for p in self.prevs], self.windows, len(self.dists)]


class RedisStore(StateStore):
    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        spec: FeatureSpec = DEFAULT_SPEC,
        prefix: str | None = None,
        max_clock_skew: int = DEFAULT_MAX_SKEW,
        allowed_lateness: int = 0,
        socket_timeout: float = 5.0,
        connect_timeout: float = 1.0,
        client: redis.Redis | None = None,
        small_key: int = SMALL_KEY,
    ) -> None:
        super().__init__(spec, max_clock_skew, allowed_lateness)
        self.small_key = small_key  # tests set 1 to count every key's windows
        self.url = url
        self.prefix = prefix if prefix is not None else f"{{attr:{spec.hash}}}:"
        if not (self.prefix.startswith("{") and "}" in self.prefix):
            raise ValueError(f"the key prefix must start with a hash tag ({{...}}), got {self.prefix!r}")
        self.meta, self.ids, self.idx = self.prefix + "meta", self.prefix + "ids", self.prefix + "idx"
        # No automatic retry: a script whose reply was lost may have run (see _run).
        self.client = client or redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout, retry=Retry(NoBackoff(), 0),
        )
        self._script = self.client.register_script(RECORD_AND_READ)
        self._sweep = self.client.register_script(SWEEP)
        self._groups = [_GroupPlan(spec, j, g, self.prefix) for j, g in enumerate(spec.key_groups)]
        self._group_json = json.dumps([g.script_plan() for g in self._groups], separators=(",", ":"))
        # keys gone quiet, named by the scripts' replies: swept, pipelined with a request, once SWEEP_AT are known
        self._stale_cut, self._stale = "", set()
        self._decode = self._decoder(spec)

    # ---- decoding the script's integers into features --------------------------------------------------------
    def _decoder(self, spec: FeatureSpec):
        names = {n: i for i, n in enumerate(spec.feature_names)}
        width = sum(g.width for g in self._groups)
        zero = width  # a column of zeros appended: the count "since offset 0"
        band_at, band_hi, band_lo, prev_at, prev_col, dist_at, dist_col = [], [], [], [], [], [], []
        col = 0
        for g, group in zip(self._groups, spec.key_groups):
            at = {o: col + k for k, o in enumerate(g.offsets)}
            at[0] = zero
            for c in spec.counts:
                if c.keys == group:
                    for b, name in zip(c.bands, c.names()):
                        band_at.append(names[name])
                        band_hi.append(at[b.end])
                        band_lo.append(at[b.start - 1])
            col += len(g.offsets)
            for p in g.prevs:
                prev_at.append(names[p.name])
                prev_col.append(col)
                col += 1
            for d in g.dists:
                dist_at.append(names[d.name])
                dist_col.append(col)
                col += 1
        hour = [names["hour_sin"], names["hour_cos"]] if spec.hour_of_day else None
        table = np.array(FeatureSpec.hour_table(), np.float64)
        n_features = len(names)
        ix = [np.array(a, np.int64) for a in (band_at, band_hi, band_lo, prev_at, prev_col, dist_at, dist_col)]

        def decode(raw: np.ndarray, t: np.ndarray) -> np.ndarray:
            m = np.concatenate([raw.reshape(len(t), width), np.zeros((len(t), 1), np.int64)], axis=1)
            out = np.empty((len(t), n_features), np.float64)
            out[:, ix[0]] = m[:, ix[1]] - m[:, ix[2]]
            prev = m[:, ix[4]].astype(np.float64)
            prev[prev < 0] = np.nan
            out[:, ix[3]] = prev
            out[:, ix[5]] = m[:, ix[6]]
            if hour is not None:
                out[:, hour] = table[(t // 3600) % 24]
            return out

        return decode

    # ---- errors -----------------------------------------------------------------------------------------------
    def _unavailable(self, err: Exception) -> StateUnavailable:
        where = self.client.get_connection_kwargs()
        target = f"{where.get('host', where.get('path', '?'))}:{where.get('port', '')}"
        text = str(err)
        if isinstance(err, redis.exceptions.OutOfMemoryError) or text.startswith("OOM"):
            text = f"Redis is at maxmemory and refuses writes (nothing was recorded): {text}"
        return StateUnavailable(f"Redis state at {target} is unavailable: {type(err).__name__}: {text}")

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UNAVAILABLE as err:
            raise self._unavailable(err) from err
        except redis.exceptions.ResponseError as err:
            if str(err).split(" ", 1)[0].upper() in _UNAVAILABLE_REPLIES:
                raise self._unavailable(err) from err
            raise

    # ---- the one round trip -----------------------------------------------------------------------------------
    def _sweep_args(self) -> tuple[list[str], list] | None:
        if len(self._stale) < SWEEP_AT:
            return None
        keys, args = [self.idx], [self._stale_cut]
        for name in self._stale:
            text = name.decode()
            j = int(text[len(self.prefix) + 2 :].split(":", 1)[0])
            rest = text[len(self.prefix) + 2 :]
            n = self._groups[j].n_keys
            keys += [text] + ([self.prefix + "w:" + rest] if n > 1 else [])
            args.append(n)
        return keys, args

    def score_arrays(self, ids: np.ndarray, t: np.ndarray, click_ids: Sequence[str | None] | None = None) -> np.ndarray:
        n = len(t)
        if n == 0:
            return np.empty((0, len(self.spec.feature_names)))
        keys = [self.meta, self.ids, self.idx]
        where: dict[str, int] = {}  # events-set name -> its KEYS index (1-based)
        per_group = []
        for g in self._groups:
            names = [g.key_format % tuple(r) for r in ids[:, g.key_fields].tolist()]
            suffixes = ([g.value_format % tuple(r) for r in ids[:, g.value_fields].tolist()] if g.value_fields
                        else [""] * n)
            at = []
            for name in names:
                b = where.get(name)
                if b is None:
                    b = where[name] = len(keys) + 1
                    keys.append(name)
                    if g.n_keys > 1:
                        keys.append(name.replace(self.prefix + "e:", self.prefix + "w:", 1))
                at.append(b)
            per_group += [at, suffixes]
        cids = [("" if c is None else c) for c in click_ids] if click_ids is not None else [""] * n
        flat = [v for row in zip(t.tolist(), cids, *per_group) for v in row]
        args = [self.retention, self.late_by, self._group_json, json.dumps(flat, separators=(",", ":")), self.small_key]
        idempotent = click_ids is not None and all(c is not None for c in click_ids)
        reply = self._run(keys, args, idempotent)
        cut, text, stale = reply
        if stale:
            self._stale_cut = cut.decode()
            self._stale.update(stale)
        raw = np.array(text.split(), np.int64)
        return self._decode(raw, np.asarray(t, np.int64))

    def _run(self, keys: list[str], args: list, idempotent: bool) -> list:
        """The sweep of keys gone quiet (if the last reply named any) and this batch's script, in one round trip."""
        sweep = self._sweep_args()
        for attempt in (0, 1):
            try:
                if sweep is None:
                    return self._script(keys=keys, args=args)
                pipe = self.client.pipeline(transaction=False)
                self._sweep(keys=sweep[0], args=sweep[1], client=pipe)
                self._script(keys=keys, args=args, client=pipe)
                swept, reply = pipe.execute(raise_on_error=False)
                if isinstance(reply, Exception):
                    raise reply
                if not isinstance(swept, Exception):
                    self._stale.clear()
                return reply
            except UNAVAILABLE as err:
                if type(err) is redis.exceptions.ConnectionError and idempotent and attempt == 0:
                    log.warning("Redis connection lost mid-request; retrying (every click has an id): %s", err)
                    continue
                raise self._unavailable(err) from err
            except redis.exceptions.ResponseError as err:
                if str(err).split(" ", 1)[0].upper() in _UNAVAILABLE_REPLIES:
                    raise self._unavailable(err) from err
                raise
        raise AssertionError("unreachable")

    # ---- health and size --------------------------------------------------------------------------------------
    def ping(self) -> None:
        self._call(self.client.ping)

    @property
    def watermark(self) -> int | None:
        wm = self._call(self.client.hget, self.meta, "wm")
        return None if wm is None else int(wm)

    def stats(self, max_keys: int = 200_000) -> StoreStats:
        """Events and keys held (a SCAN over the events sets, capped at max_keys keys), late and duplicate clicks."""

        def collect() -> StoreStats:
            meta = self.client.hgetall(self.meta)
            out = StoreStats(late_events=int(meta.get(b"late", 0)), duplicate_clicks=int(meta.get(b"dup", 0)))
            batch: list[bytes] = []

            def flush() -> None:
                pipe = self.client.pipeline(transaction=False)
                for k in batch:
                    pipe.zcard(k)
                out.events += sum(pipe.execute())
                batch.clear()

            for key in self.client.scan_iter(match=self.prefix.replace("{", "\\{").replace("}", "\\}") + "e:*",
                                             count=1000):
                out.keys += 1
                batch.append(key)
                if len(batch) >= 1000:
                    flush()
                if out.keys >= max_keys:
                    break
            if batch:
                flush()
            return out

        return self._call(collect)

    def clear(self) -> None:
        """Drop this spec's state (tests and benchmarks)."""

        def drop() -> None:
            pattern = self.prefix.replace("{", "\\{").replace("}", "\\}") + "*"
            for key in self.client.scan_iter(match=pattern, count=1000):
                self.client.delete(key)

        self._call(drop)
        self._stale.clear()
