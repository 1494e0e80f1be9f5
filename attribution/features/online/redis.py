"""Online state in Redis, shared by every predictor replica: one round trip per request.

Layout (prefix `attr:<spec hash>:`, so a model with another spec never reads this state):

    <prefix>meta               hash: wm (largest second recorded), seq (event counter), late, dup
    <prefix>idx                sorted set: each key's latest second, so keys gone quiet are dropped by
                               event time (as MemoryStore's expiry queue does), not only by their TTL
    <prefix>id:<click_id>      SET NX with a TTL: a retried click is recorded once, whichever replica gets it
    <prefix>g<j>:<k1>:<k2>..   sorted set per key group j and key: score = second, member =
                               "<seq>[:<v1>:<v2>..]" (a unique event id, then the values the group's
                               distinct counts need), so identical clicks stay distinct members

One Lua script (EVALSHA; redis-py's Script reloads it on NOSCRIPT, e.g. after Redis restarts) records the
batch with the same rules as MemoryStore (retries skipped, clicks older than the watermark minus the
horizon counted as late and not kept), trims each touched key by event time past the horizon, refreshes
its TTL, deletes keys whose latest click is past the horizon (needs Redis >= 6.2 for ZADD GT), and returns every key's members in [earliest click - horizon, latest click - 1]. The histories
come back as `History` objects, so the same FeaturePlan computes the features as for MemoryStore: parity
is by construction. Scripts run atomically, so concurrent replicas see each batch whole.

A Redis that cannot be reached raises StateUnavailable; redis-py reconnects on the next request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from attribution.features.online.state import (
    FIELD_INDEX,
    Click,
    History,
    HistoryStore,
    StateUnavailable,
    StoreStats,
)
from attribution.features.spec import DEFAULT_SPEC, FeatureSpec

log = logging.getLogger(__name__)

# ARGV: meta key, key prefix, horizon, ttl, n groups, clicks, reads. `clicks` is a JSON array, per click:
# second, id key ('' if none), then per group: key suffix, member suffix; `reads` a JSON array of
# (key suffix, min score, max score). Returns one string: per read, "member score member score ..." on a line.
RECORD_AND_FETCH = r"""
local meta, P = ARGV[1], ARGV[2]
local horizon = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local g = tonumber(ARGV[5])
local clicks = cjson.decode(ARGV[6])
local reads = cjson.decode(ARGV[7])
local stride = 2 + 2 * g
local n = #clicks / stride
local wm = tonumber(redis.call('HGET', meta, 'wm') or '-4611686018427387904')
local seq = redis.call('HINCRBY', meta, 'seq', n) - n
local late, dup = 0, 0
local lo = nil
local touched = {}
for i = 1, n do
  local base = (i - 1) * stride
  local t = clicks[base + 1]
  local cid = clicks[base + 2]
  if lo == nil or t < lo then lo = t end
  local keep = true
  if cid ~= '' and not redis.call('SET', P .. cid, string.format('%d', t), 'NX', 'EX', ttl) then
    dup = dup + 1
    keep = false
  end
  if keep then
    if t > wm then
      wm = t
    elseif t < wm - horizon then
      late = late + 1
      keep = false
    end
  end
  if keep then
    local member = string.format('%d', seq + i)
    for j = 1, g do
      local key = P .. clicks[base + 1 + 2 * j]
      redis.call('ZADD', key, t, member .. clicks[base + 2 + 2 * j])
      local last = touched[key]
      if last == nil or t > last then touched[key] = t end
    end
  end
end
if lo ~= nil then
  -- evict no further than this batch's earliest click still needs (as MemoryStore does)
  local cut = '(' .. string.format('%d', math.min(wm, lo) - horizon)
  local idx = P .. 'idx'
  for key, last in pairs(touched) do
    redis.call('ZREMRANGEBYSCORE', key, '-inf', cut)
    redis.call('EXPIRE', key, ttl)
    redis.call('ZADD', idx, 'GT', last, key)
  end
  -- keys whose latest click fell behind the horizon leave, by event time (a bounded sweep per batch)
  local stale = redis.call('ZRANGEBYSCORE', idx, '-inf', cut, 'LIMIT', 0, 1000)
  for _, key in ipairs(stale) do redis.call('DEL', key) end
  if #stale > 0 then redis.call('ZREM', idx, unpack(stale)) end
  redis.call('EXPIRE', idx, ttl)
  redis.call('HSET', meta, 'wm', string.format('%d', wm))
end
if late > 0 then redis.call('HINCRBY', meta, 'late', late) end
if dup > 0 then redis.call('HINCRBY', meta, 'dup', dup) end
redis.call('EXPIRE', meta, ttl)
local out = {}
for k = 1, #reads, 3 do
  local r = redis.call('ZRANGEBYSCORE', P .. reads[k], string.format('%d', reads[k + 1]),
                      string.format('%d', reads[k + 2]), 'WITHSCORES')
  out[#out + 1] = table.concat(r, ' ')
end
return table.concat(out, '\n')
"""

UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ReadOnlyError)
# Server-side refusals that mean "the state is not usable right now", not a bug in the script.
_UNAVAILABLE_REPLIES = ("OOM", "MISCONF", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS")


class RedisStore(HistoryStore):
    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        spec: FeatureSpec = DEFAULT_SPEC,
        prefix: str | None = None,
        ttl_slack: int = 3600,
        socket_timeout: float = 5.0,
        connect_timeout: float = 1.0,
        client: redis.Redis | None = None,
    ) -> None:
        super().__init__(spec)
        self.url = url
        self.prefix = prefix if prefix is not None else f"attr:{spec.hash}:"
        self.meta = self.prefix + "meta"
        # Keys outlive the largest window by a margin of wall-clock time; event-time trimming does the rest.
        self.ttl = int(self.horizon + ttl_slack)
        # One quick retry on a dropped connection (a stale pooled socket after Redis restarted); timeouts are
        # not retried, as the script may have run and clicks without an id would be recorded twice.
        self.client = client or redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        )
        self._script = self.client.register_script(RECORD_AND_FETCH)
        self._plan = [
            (
                f"g{j}:",
                tuple(FIELD_INDEX[k] for k in g),
                tuple(FIELD_INDEX[f] for f in self.fields[g]),
                self.fields[g],
            )
            for j, g in enumerate(self.groups)
        ]

    def _unavailable(self, err: Exception) -> StateUnavailable:
        where = self.client.get_connection_kwargs()
        target = f"{where.get('host', where.get('path', '?'))}:{where.get('port', '')}"
        return StateUnavailable(f"Redis state at {target} is unavailable: {type(err).__name__}: {err}")

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UNAVAILABLE as err:
            raise self._unavailable(err) from err
        except redis.exceptions.ResponseError as err:
            if str(err).split(" ", 1)[0].upper() in _UNAVAILABLE_REPLIES:
                raise self._unavailable(err) from err
            raise

    # ---- the one round trip ---------------------------------------------------------------------------------
    def record_and_fetch(self, clicks: Sequence[Click]) -> list[dict[tuple[str, ...], History]]:
        if not clicks:
            return []
        plan = self._plan
        flat: list = []
        reads: dict[str, list] = {}  # key suffix -> [earliest second, latest second, group fields]
        per_click: list[list[str]] = []
        for c in clicks:
            ids = (c.ip, c.app, c.device, c.os, c.channel)
            t = c.click_time
            flat.append(t)
            flat.append("" if c.click_id is None else "id:" + c.click_id)
            keys = []
            for kp, kidx, fidx, fields in plan:
                key = kp + ":".join([str(ids[i]) for i in kidx])
                flat.append(key)
                flat.append("".join([":" + str(ids[i]) for i in fidx]))
                keys.append(key)
                r = reads.get(key)
                if r is None:
                    reads[key] = [t, t, fields]
                else:
                    r[0] = min(r[0], t)
                    r[1] = max(r[1], t)
            per_click.append(keys)
        wanted: list = []
        for key, (lo, hi, _) in reads.items():
            wanted += (key, lo - self.horizon, hi - 1)
        args = [self.meta, self.prefix, self.horizon, self.ttl, len(plan), json.dumps(flat, separators=(",", ":")), json.dumps(wanted, separators=(",", ":"))]
        text = self._call(self._script, args=args)
        lines = text.split(b"\n")
        if len(lines) != len(reads):
            raise RuntimeError(f"Redis state script returned {len(lines)} histories for {len(reads)} keys")
        histories: dict[str, History] = {}
        for (key, (_, _, fields)), line in zip(reads.items(), lines):
            tokens = line.split()
            h = History(times=[int(s) for s in tokens[1::2]], values={})
            if fields:
                parts = [m.split(b":") for m in tokens[0::2]]
                for k, f in enumerate(fields, start=1):
                    h.values[f] = [int(p[k]) for p in parts]
            histories[key] = h
        groups = self.groups
        return [{g: histories[k] for g, k in zip(groups, keys)} for keys in per_click]

    # ---- health and size ----------------------------------------------------------------------------------
    def ping(self) -> None:
        self._call(self.client.ping)

    def stats(self, max_keys: int = 200_000) -> StoreStats:
        """Events and keys held (a SCAN over the prefix, capped at max_keys keys), late and duplicate clicks."""

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

            for key in self.client.scan_iter(match=self.prefix + "g*", count=1000):
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
            for key in self.client.scan_iter(match=self.prefix + "*", count=1000):
                self.client.delete(key)

        self._call(drop)
