"""Online state in Redis, shared by every predictor replica: one atomic script per request, cost flat in history.

The design, its invariants and sizing are in docs/online-state.md. Layout (every key carries the hash tag
`{attr:<spec hash>:v<layout version>}`, so a request's keys share one Redis Cluster slot; every key a script
touches is declared):

    {P}meta                    hash: wm (largest second recorded), seq (clicks submitted), late, dup
    {P}ids                     sorted set: click_id -> its second; a retried id is recorded once, and ids
                               leave with their clicks, by event time
    {P}idx                     sorted set: each ip key or events set -> its latest second, so that keys gone
                               quiet are found (and swept) by event time
    {P}i:<ip>                  string: a small ip's clicks (fewer than SMALL_KEY), 12 bytes each (second, app,
                               device, os, channel), for all its key groups with ip at once; "B" once busy
    {P}e:<j>:<k1>:<k2>..       sorted set per key group j and key of a busy ip, or hot key (a group without
                               ip: an app, a channel.., always a set): score = second, member =
                               "<event id>[:<v1>:<v2>..]" (unique, then the values the group's distinct counts
                               need)
    {P}w:<j>:<k1>..            hash (a busy or hot key's counted windows): per distinct-count window w of the
                               group its counted range a<w>, b<w> and the clicks in it c<w>; per distinct
                               count k, n<k> (distinct values in its range) and "<k>:<value>" -> clicks with
                               that value in the range

A small ip is read with one GET per batch and all its groups' features counted in the script in one pass; its
new clicks are APPENDed. An ip reaching SMALL_KEY clicks turns busy: its clicks move into its groups' sets. The
client declares the group keys of the ips it knows to be busy, and every click's hot keys; for others the script
answers, before any write, which keys it needs, and the client sends the request again with them declared. A
busy ip's key with fewer than SMALL_KEY clicks (a hot key: HOT_WHOLE) is read whole (one ZRANGEBYSCORE); a
busier key's distinct counts are kept in its windows hash, whose ranges follow the clicks (a click's range
differs from the previous click's by the clicks between them, so a move costs a few HINCRBYs, not a scan), and
so are its band counts at those windows' edges; other band counts are ZCOUNTs and the time since the previous
click one ZREVRANGEBYSCORE, O(log n) each. Same rules as MemoryStore (attribution.features.online.state): retries
skipped, late clicks not recorded and read from the retained part of their window; tests/test_online_redis.py
holds the two to equal features on the real sample, adversarial and hypothesis streams.

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

# Written in by RedisStore: GROUPS (per group: window offsets past 0, since-previous windows, counted windows
# [[seconds, [[count k, member part, click field]..]]..], number of distinct counts, key fields, value fields, key
# fields but ip, 1 if keyed by ip, per offset the counted window of the same length or 0), SWEEP_AT, ZEROS (per group, the raw integers of a click with no earlier
# click) and HORIZON (the longest window of the groups keyed by ip). KEYS: meta, ids, idx, then each ip's key,
# then the keys of busy ips' clicks and of every click's hot groups (groups without ip) (per group its events set
# and, for a group with distinct counts, its windows hash right after). ARGV: retention, late_by, the clicks
# (JSON, flat: second, KEYS index of the ip's key, ip, app, device, os, channel), the size under which an ip is
# packed and a key read whole, the click ids (JSON list, '' for none) or '', the key prefix, and the clicks'
# group keys (JSON, flat: click number, then per group the KEYS index of its events set, 0 where not declared;
# busy ips' clicks, or every click when the spec has hot groups) or ''.
# Returns the stale sweep's cut, the features' raw integers (per click and group: the clicks in
# [max(t - o, floor), t - 1] per offset o, t - previous second (-1: none), each distinct count) and, once
# SWEEP_AT are known, keys gone quiet; or, having written nothing, {'need', ips, keys}: ips whose group keys must
# be declared (busy, or turning busy) and the keys of a turning ip's earlier clicks that were not.
RECORD_AND_READ = r"""
local meta, ids, idx = KEYS[1], KEYS[2], KEYS[3]
local retention = tonumber(ARGV[1])
local late_by = tonumber(ARGV[2])
local groups = GROUPS  -- the spec's plan, written into the script (see _lua)
local clicks = cjson.decode(ARGV[3])
local S = tonumber(ARGV[4])
local SH = math.min(S, HOT_WHOLE)  -- a hot key is read whole below this many clicks (it is read by every click)
local cidv = nil
if ARGV[5] ~= '' then cidv = cjson.decode(ARGV[5]) end
local prefix = ARGV[6]
local G = #groups
local IPG, HOT = {}, {}  -- groups keyed by ip (packed while the ip is small); hot groups (no ip: always sets)
for j = 1, G do if groups[j][8] == 1 then IPG[#IPG + 1] = j else HOT[#HOT + 1] = j end end
local gk = {}  -- click -> its group keys' KEYS indexes (0: not declared; ip groups of an ip not known busy)
if ARGV[7] ~= '' then
  local flat = cjson.decode(ARGV[7])
  for q = 1, #flat, G + 1 do gk[flat[q]] = {unpack(flat, q + 1, q + G)} end
end
local NONE = {}
local function keys_of(i) return gk[i] or NONE end
local stride = 7
local n = #clicks / stride
local EV, EVSIZE = '<I4I2I2I2I2', 12  -- a small ip's click: second, app, device, os, channel
local BUSY = 'B'
local function s(x) return string.format('%d', x) end
local function field(i, x) return clicks[(i - 1) * stride + 2 + x] end  -- x: 1 ip, 2 app, 3 device, 4 os, 5 channel

-- 1. reads only: each ip's state, read once; what a busy ip or a promotion needs must be declared
local by_ip, ip_order = {}, {}
for i = 1, n do
  local k = clicks[(i - 1) * stride + 2]
  local l = by_ip[k]
  if l == nil then l = {}; by_ip[k] = l; ip_order[#ip_order + 1] = k end
  l[#l + 1] = i
end
local function declared(i)
  local b = gk[i]
  if b == nil then return false end
  for _, j in ipairs(IPG) do if b[j] == 0 then return false end end
  return true
end
local function group_key(j, e)  -- the events set of group j for a click's fields e (as the client names it)
  local parts = {prefix .. 'e:' .. (j - 1)}
  for _, x in ipairs(groups[j][5]) do parts[#parts + 1] = s(e[x]) end
  return table.concat(parts, ':')
end
local small, busy, promote = {}, {}, {}
local need_ips, need_keys, names = {}, {}, nil
for _, k in ipairs(ip_order) do
  local list = by_ip[k]
  local v = redis.call('GET', KEYS[k])
  local ok = true
  for _, i in ipairs(list) do if not declared(i) then ok = false; break end end
  if v == BUSY then
    busy[k] = true
    if not ok then need_ips[#need_ips + 1] = s(field(list[1], 1)) end
  else
    local evs = {}
    if v then
      local ip = field(list[1], 1)
      for p = 1, #v, EVSIZE do
        local t, a, d, o, c = struct.unpack(EV, v, p)
        evs[#evs + 1] = {ip, a, d, o, c, t}
      end
    end
    if #evs + #list < S then
      small[k] = {evs = evs, old = #evs, dirty = false}
    else  -- promotion: this ip's clicks move into its groups' sets, whose keys must all be declared
      if names == nil then names = {}; for q = 4, #KEYS do names[KEYS[q]] = q end end
      local at = {}
      for _, e in ipairs(evs) do
        local row = {}
        for _, j in ipairs(IPG) do  -- a hot group's sets hold the ip's clicks already
          local name = group_key(j, e)
          local b = names[name]
          if b == nil then ok = false; need_keys[#need_keys + 1] = name else row[j] = b end
        end
        at[#at + 1] = row
      end
      if ok then promote[k] = {evs = evs, at = at}
      else need_ips[#need_ips + 1] = s(field(list[1], 1)) end
      busy[k] = true
    end
  end
end
if #need_ips > 0 then return {'need', need_ips, need_keys} end

-- 2. writes: the first one (a script refused at maxmemory fails here, before anything is written)
local wm = tonumber(redis.call('HGET', meta, 'wm'))
local seq = redis.call('HINCRBY', meta, 'seq', n) - n
local function suffix(j, e)
  local parts = {''}
  for _, x in ipairs(groups[j][6]) do parts[#parts + 1] = s(e[x]) end
  return table.concat(parts, ':')
end
for k, p in pairs(promote) do  -- an ip's keys held nothing live while it was small: start them afresh
  local gone = {}
  local function drop(j, b)
    if not gone[b] then
      gone[b] = true
      redis.call('DEL', KEYS[b])
      if #groups[j][3] > 0 then redis.call('DEL', KEYS[b + 1]) end
    end
  end
  for _, i in ipairs(by_ip[k]) do local b = keys_of(i); for _, j in ipairs(IPG) do drop(j, b[j]) end end
  for q, e in ipairs(p.evs) do
    for _, j in ipairs(IPG) do
      local b = p.at[q][j]
      drop(j, b)
      redis.call('ZADD', KEYS[b], e[6], 'p' .. s(seq) .. '.' .. q .. suffix(j, e))  -- unique: this batch's seq
    end
  end
  redis.call('SET', KEYS[k], BUSY)
end

-- counted windows, read once per key and batch: w.lo[wi], w.hi[wi] (nil: none), w.c[wi] (clicks in the range),
-- w.n[k] (distinct values)
local wins = {}
local function load(b, plan)
  local w = wins[b]
  if w == nil then
    local f = {}
    for wi = 1, #plan[3] do f[#f + 1] = 'a' .. wi; f[#f + 1] = 'b' .. wi; f[#f + 1] = 'c' .. wi end
    for k = 1, plan[4] do f[#f + 1] = 'n' .. k end
    local r = redis.call('HMGET', KEYS[b + 1], unpack(f))
    w = {lo = {}, hi = {}, c = {}, n = {}, dirty = false}
    local i = 1
    for wi = 1, #plan[3] do
      w.lo[wi] = tonumber(r[i]); w.hi[wi] = tonumber(r[i + 1]); w.c[wi] = tonumber(r[i + 2]) or 0; i = i + 3
    end
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
-- clicks (their members' parts) enter (delta 1) or leave (-1) counted window wi
local function apply(b, w, wi, dists, rows, delta)
  local wk = KEYS[b + 1]
  for _, parts in ipairs(rows) do
    for _, d in ipairs(dists) do
      local fld = d[1] .. ':' .. parts[d[2]]
      local c = redis.call('HINCRBY', wk, fld, delta)
      if delta > 0 and c == 1 then w.n[d[1]] = w.n[d[1]] + 1 end
      if c <= 0 then redis.call('HDEL', wk, fld); w.n[d[1]] = w.n[d[1]] - 1 end
    end
  end
  w.c[wi] = w.c[wi] + delta * #rows
  w.dirty = true
end
local function fetch(b, lo, hi)  -- the members' parts of the key's clicks in [lo, hi]
  local rows = {}
  for q, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[b], s(lo), s(hi))) do rows[q] = split(m) end
  return rows
end
local function add_range(b, w, wi, dists, lo, hi, delta)
  if lo <= hi then apply(b, w, wi, dists, fetch(b, lo, hi), delta) end
end
-- move counted window wi of the key to [a, z]
local function move(b, w, plan, wi, a, z)
  local dists = plan[3][wi][2]
  local lo, hi = w.lo[wi], w.hi[wi]
  if lo ~= nil and (z < lo or a > hi) then  -- no overlap: start over
    if #plan[3] == 1 then
      redis.call('DEL', KEYS[b + 1])
      for _, d in ipairs(dists) do w.n[d[1]] = 0 end
      w.c[wi] = 0
    else
      add_range(b, w, wi, dists, lo, hi, -1)
    end
    lo = nil
  end
  if lo == nil then
    add_range(b, w, wi, dists, a, z, 1)
  else
    if a < lo then add_range(b, w, wi, dists, a, lo - 1, 1) end
    if z > hi then add_range(b, w, wi, dists, hi + 1, z, 1) end
    if a > lo then add_range(b, w, wi, dists, lo, a - 1, -1) end
    if z < hi then add_range(b, w, wi, dists, z + 1, hi, -1) end
  end
  w.lo[wi], w.hi[wi], w.dirty = a, z, true
end
-- move every counted window of the key to end at z, window wi to start at a[wi]: the windows end together, so
-- the clicks entering at their top are read once for all of them
local function move_all(b, w, plan, a, z)
  local top = w.hi[1]
  local common = top ~= nil and z > top
  for wi = 1, #plan[3] do
    if w.lo[wi] == nil or w.hi[wi] ~= top or a[wi] > top then common = false end
  end
  if common and #plan[3] > 1 then
    local rows = fetch(b, top + 1, z)
    for wi, win in ipairs(plan[3]) do apply(b, w, wi, win[2], rows, 1); w.hi[wi] = z end
  end
  for wi = 1, #plan[3] do move(b, w, plan, wi, a[wi], z) end
end

-- 3. record, in batch order
local late, dup, lo = 0, 0, nil
local floors, in_batch, touched = {}, {}, {}
for i = 1, n do
  local base = (i - 1) * stride
  local t, k = clicks[base + 1], clicks[base + 2]
  local cid = cidv and cidv[i] or ''
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
    local last = touched[k]
    if last == nil or t > last then touched[k] = t end
    local sm = small[k]
    local e = {clicks[base + 3], clicks[base + 4], clicks[base + 5], clicks[base + 6], clicks[base + 7]}
    local into = G
    if sm then
      e[6] = t
      sm.evs[#sm.evs + 1] = e
      sm.dirty = true
      into = #HOT
    end
    local member = s(seq + i)
    for q = 1, into do
      local j = sm and HOT[q] or q
      local b, plan = keys_of(i)[j], groups[j]
      local m = member .. suffix(j, e)
      redis.call('ZADD', KEYS[b], t, m)
      if #plan[3] > 0 then  -- a counted window already over this second takes the click in
        local w = load(b, plan)
        for wi, win in ipairs(plan[3]) do
          if w.lo[wi] ~= nil and t >= w.lo[wi] and t <= w.hi[wi] then apply(b, w, wi, win[2], {split(m)}, 1) end
        end
      end
      last = touched[b]
      if last == nil or t > last then touched[b] = t end
    end
  end
end
-- events before the cut are no longer needed by any click that is not late (nor by this batch's)
local cut = nil
if lo ~= nil and wm ~= nil then cut = math.min(wm, lo) - retention end

-- 4. read
local out, no, trim = {}, 0, {}
local seen, stamp = {}, 0
-- a click with no earlier click of its ip in the ip groups' longest window: every ip group's counts 0, previous -1
local zeros, horizon = ZEROS, HORIZON
local acc, prv, dst = {}, {}, {}
for j = 1, G do acc[j] = {}; prv[j] = {}; dst[j] = {} end
-- one group's features of click i from the key's set (a busy ip's key, or a hot key)
-- the first second a window of `o` seconds reads for a click at t (a late click's floor: what is surely held)
local function since(t, o, floor)
  if floor then return math.max(t - o, floor) end
  return t - o
end
local function read_key(i, j, t, hi, floor)
  local b, plan = keys_of(i)[j], groups[j]
  local w = nil
  if #plan[3] > 0 then w = load(b, plan) end
  local r = nil
  if w == nil or w.lo[1] == nil then  -- a key with few clicks is read whole (older ones too, to trim them)
    local whole = plan[8] == 1 and S or SH
    r = redis.call('ZRANGEBYSCORE', KEYS[b], '-inf', s(hi), 'WITHSCORES', 'LIMIT', 0, whole)
    if #r >= 2 * whole then r = nil end
    if r and cut and #r > 0 and tonumber(r[2]) < cut then trim[b] = true end
  end
  if r then
    local m = #r / 2
    for _, o in ipairs(plan[1]) do
      local a = since(t, o, floor)
      local c = 0
      for q = m, 1, -1 do if tonumber(r[2 * q]) >= a then c = c + 1 else break end end
      no = no + 1; out[no] = c
    end
    for _, pw in ipairs(plan[2]) do
      local a = since(t, pw, floor)
      no = no + 1
      if m > 0 and tonumber(r[2 * m]) >= a then out[no] = t - tonumber(r[2 * m]) else out[no] = -1 end
    end
    for _, win in ipairs(plan[3]) do
      local a = since(t, win[1], floor)
      local seen_, cnt = {}, {}
      for _, d in ipairs(win[2]) do seen_[d[1]] = {}; cnt[d[1]] = 0 end
      for q = m, 1, -1 do
        if tonumber(r[2 * q]) < a then break end
        local parts = split(r[2 * q - 1])
        for _, d in ipairs(win[2]) do
          local v = parts[d[2]]
          if not seen_[d[1]][v] then seen_[d[1]][v] = true; cnt[d[1]] = cnt[d[1]] + 1 end
        end
      end
      for _, d in ipairs(win[2]) do no = no + 1; out[no] = cnt[d[1]] end
    end
  else  -- a busy key: distinct counts (and the counts over the same windows) from its counted windows, other
    -- counts by rank
    if touched[b] then trim[b] = true end
    if w then
      local a = {}
      for wi, win in ipairs(plan[3]) do a[wi] = since(t, win[1], floor) end
      move_all(b, w, plan, a, hi)
    end
    for q, o in ipairs(plan[1]) do
      local wi = plan[9][q]
      no = no + 1
      if wi > 0 then out[no] = w.c[wi]
      else out[no] = redis.call('ZCOUNT', KEYS[b], s(since(t, o, floor)), s(hi)) end
    end
    for _, pw in ipairs(plan[2]) do
      local p = redis.call('ZREVRANGEBYSCORE', KEYS[b], s(hi), s(since(t, pw, floor)),
                           'WITHSCORES', 'LIMIT', 0, 1)
      no = no + 1; out[no] = p[2] and (t - tonumber(p[2])) or -1
    end
    for _, win in ipairs(plan[3]) do
      for _, d in ipairs(win[2]) do no = no + 1; out[no] = w.n[d[1]] end
    end
  end
end
for i = 1, n do
  local base = (i - 1) * stride
  local t, k = clicks[base + 1], clicks[base + 2]
  local floor = floors[i]
  local hi = t - 1
  local sm = small[k]
  local first = sm ~= nil
  if first then
    local a = t - horizon
    if floor and floor > a then a = floor end
    local evs = sm.evs
    for q = 1, #evs do local te = evs[q][6]; if te <= hi and te >= a then first = false; break end end
  end
  if sm and not first then  -- a small ip: every ip group's features from its clicks, in one pass
    stamp = stamp + 1
    local c = {clicks[base + 3], clicks[base + 4], clicks[base + 5], clicks[base + 6], clicks[base + 7]}
    for _, j in ipairs(IPG) do
      local g = groups[j]
      for q = 1, #g[1] do acc[j][q] = 0 end
      for q = 1, #g[2] do prv[j][q] = -1 end
      for q = 1, g[4] do dst[j][q] = 0 end
    end
    for _, e in ipairs(sm.evs) do
      local te = e[6]
      if te <= hi then
        for _, j in ipairs(IPG) do
          local g = groups[j]
          local match = true
          for _, x in ipairs(g[7]) do if e[x] ~= c[x] then match = false; break end end
          if match then
            local aj = acc[j]
            for q, o in ipairs(g[1]) do
              local a = t - o
              if floor and floor > a then a = floor end
              if te >= a then aj[q] = aj[q] + 1 end
            end
            local pj = prv[j]
            for q, pw in ipairs(g[2]) do
              local a = t - pw
              if floor and floor > a then a = floor end
              if te >= a and (pj[q] < 0 or t - te < pj[q]) then pj[q] = t - te end
            end
            for _, win in ipairs(g[3]) do
              local a = t - win[1]
              if floor and floor > a then a = floor end
              if te >= a then
                for _, d in ipairs(win[2]) do
                  local key = (j * 64 + d[1]) * 4294967296 + e[d[3]]
                  if seen[key] ~= stamp then seen[key] = stamp; dst[j][d[1]] = dst[j][d[1]] + 1 end
                end
              end
            end
          end
        end
      end
    end
  end
  for j = 1, G do
    local g = groups[j]
    if not sm or g[8] == 0 then
      read_key(i, j, t, hi, floor)
    elseif first then
      no = no + 1; out[no] = zeros[j]
    else
      for q = 1, #g[1] do no = no + 1; out[no] = acc[j][q] end
      for q = 1, #g[2] do no = no + 1; out[no] = prv[j][q] end
      for _, win in ipairs(g[3]) do for _, d in ipairs(win[2]) do no = no + 1; out[no] = dst[j][d[1]] end end
    end
  end
end

-- 5. write back: small ips' clicks (appended, or rewritten without those before the cut), counted windows,
-- eviction by event time (every window now starts at or after the cut), the index
local function pack(evs, from)
  local packed = {}
  for q = from, #evs do local e = evs[q]; packed[#packed + 1] = struct.pack(EV, e[6], e[2], e[3], e[4], e[5]) end
  return table.concat(packed)
end
for k, sm in pairs(small) do
  local evs, old = sm.evs, false  -- clicks recorded now are never before the cut: only old ones can go
  if cut ~= nil then for q = 1, sm.old do if evs[q][6] < cut then old = true; break end end end
  if old then
    local keep = {}
    for q = 1, #evs do if evs[q][6] >= cut then keep[#keep + 1] = evs[q] end end
    if #keep == 0 then redis.call('DEL', KEYS[k]) else redis.call('SET', KEYS[k], pack(keep, 1)) end
  elseif sm.dirty then
    redis.call('APPEND', KEYS[k], pack(evs, sm.old + 1))
  end
end
for b, w in pairs(wins) do
  if w.dirty then
    local f = {}
    for wi = 1, #w.lo do
      if w.lo[wi] ~= nil then
        f[#f + 1] = 'a' .. wi; f[#f + 1] = s(w.lo[wi]); f[#f + 1] = 'b' .. wi; f[#f + 1] = s(w.hi[wi])
        f[#f + 1] = 'c' .. wi; f[#f + 1] = s(w.c[wi])
      end
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
  -- a batch adds at most G + 1 keys per click: sweeping up to 2 (G + 1) per click keeps pace
  stale = redis.call('ZRANGEBYSCORE', idx, '-inf', '(' .. s(cut), 'LIMIT', 0, SWEEP_AT + 2 * (G + 1) * n)
  if #stale < SWEEP_AT then stale = {} end  -- named once a sweep's worth is known (the client sweeps then)
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
SMALL_KEY = 48  # clicks under which an ip is packed, or a busy ip's key read whole (see docs/online-state.md)
# a hot key (a group without ip: an app, a channel..) is read by every click of it: read whole only while it holds
# fewer than this many clicks, then through its counted windows (bench/online.py --parts wide)
HOT_WHOLE = 8
BUSY_IPS_KEPT = 100_000  # busy ips a client remembers
PACKED = 12  # bytes of a small ip's click (the script's EVSIZE)
# (redis-py maps "OOM ..." replies to OutOfMemoryError and "LOADING" to BusyLoadingError, a ConnectionError)
UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ReadOnlyError,
               redis.exceptions.OutOfMemoryError)
# Server-side refusals that mean "the state is not usable right now", not a bug in the script.
_UNAVAILABLE_REPLIES = ("OOM", "MISCONF", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS", "BUSY")


def _lua(value: list | int) -> str:
    """A plan (nested lists of integers) as a Lua table constructor: built by the script, not decoded per call."""
    return "{" + ",".join(map(_lua, value)) + "}" if isinstance(value, list) else str(int(value))


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
        self.counted = windows
        # counted windows: [seconds, [[count k (1-based), member part (1-based: the event id is part 1), click
        # field (1-based: ip, app, device, os, channel)]]]
        self.windows = [[w, [[k + 1, fields.index(d.of) + 2, KEY_FIELDS.index(d.of) + 1]
                             for k, d in enumerate(dists) if d.window == w]] for w in windows]
        self.dists = [d for w in windows for d in dists if d.window == w]  # in output order
        self.n_keys = 2 if dists else 1
        self.has_ip = "ip" in group  # else a hot key (an app, a channel..): always its own sets, never packed
        self.horizon = max([*self.offsets, *(p.window for p in self.prevs), *windows])
        self.width = len(self.offsets) + len(self.prevs) + len(self.dists)
        self.key_format = prefix + f"e:{j}:" + ":".join(["%d"] * len(group))  # the key's events set
        self.value_format = "".join([":%d"] * len(fields))  # the member's values after its event id

    def zero_row(self) -> str:
        """The group's raw integers for a click with no earlier click in its window."""
        return " ".join(["0"] * len(self.offsets) + ["-1"] * len(self.prevs) + ["0"] * len(self.dists))

    def script_plan(self) -> list:
        key = [f + 1 for f in self.key_fields]
        return [self.offsets, [p.window for p in self.prevs], self.windows, len(self.dists), key,
                [f + 1 for f in self.value_fields], [f for f in key if f != 1], int(self.has_ip),
                [1 + self.counted.index(o) if o in self.counted else 0 for o in self.offsets]]


# The key layout's version, in every default key name: state written by another layout (an older release
# during a rolling upgrade) is never read as this one's; it ages out by its own TTLs instead.
LAYOUT_VERSION = 3  # 3: a counted window also keeps its clicks (c<w>)


def default_prefix(spec: FeatureSpec) -> str:
    """The key prefix: the hash tag of the spec and the layout, so a different spec or layout never shares keys."""
    return f"{{attr:{spec.hash}:v{LAYOUT_VERSION}}}:"


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
        self.prefix = prefix if prefix is not None else default_prefix(spec)
        if not (self.prefix.startswith("{") and "}" in self.prefix):
            raise ValueError(f"the key prefix must start with a hash tag ({{...}}), got {self.prefix!r}")
        self.meta, self.ids, self.idx = self.prefix + "meta", self.prefix + "ids", self.prefix + "idx"
        # No automatic retry: a script whose reply was lost may have run (see _run).
        self.client = client or redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout, retry=Retry(NoBackoff(), 0),
        )
        self._sweep = self.client.register_script(SWEEP)
        self._groups = [_GroupPlan(spec, j, g, self.prefix) for j, g in enumerate(spec.key_groups)]
        self._ip_groups = [g for g in self._groups if g.has_ip]
        self._hot = any(not g.has_ip for g in self._groups)  # groups without ip: every click's keys are declared
        zeros = "{" + ",".join(f"'{g.zero_row()}'" for g in self._groups) + "}"
        self._script = self.client.register_script(
            RECORD_AND_READ.replace("GROUPS", _lua([g.script_plan() for g in self._groups]), 1)
            .replace("SWEEP_AT", str(SWEEP_AT)).replace("HOT_WHOLE", str(HOT_WHOLE)).replace("ZEROS", zeros, 1)
            .replace("HORIZON", str(max((g.horizon for g in self._ip_groups), default=0)), 1))
        # ips whose clicks live in their groups' sets (learnt from the script's replies; a stale entry only
        # declares keys the script does not need). Bounded: forgetting costs one more round trip per ip.
        self._busy: set[int] = set()
        self._busy_sorted = np.zeros(0, np.int64)
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
        events = self.prefix + "e:"
        for name in self._stale:
            text = name.decode()
            n = 1
            if text.startswith(events):  # a group's events set, and its windows hash if the group counts any
                rest = text[len(self.prefix) + 2 :]
                n = self._groups[int(rest.split(":", 1)[0])].n_keys
                keys += [text] + ([self.prefix + "w:" + rest] if n > 1 else [])
            else:  # an ip's key
                keys.append(text)
            args.append(n)
        return keys, args

    def _check(self, ids: np.ndarray, t: np.ndarray) -> None:
        """A small ip's clicks are packed (second: 4 bytes, app, device, os, channel: 2 bytes each)."""
        for name, col, top in (("click_time", t, 1 << 32), *((f, ids[:, c], 1 << 16 if c else 1 << 32)
                                                              for c, f in enumerate(KEY_FIELDS))):
            bad = np.flatnonzero((col < 0) | (col >= top))
            if len(bad):
                raise ValueError(f"row {int(bad[0])}: {name} {int(col[bad[0]])} is outside [0, {top})")

    def _keys(self, ids: np.ndarray, busy: np.ndarray, extra: list[str]) -> tuple[list[str], np.ndarray]:
        """KEYS: meta, ids, idx, each ip's key, then the group keys of busy ips' clicks, the hot groups' keys of
        every click and `extra` (keys of a turning ip's earlier clicks). Returns the keys and the clicks' columns: the ip key's index, then per
        group its events set's index (0: not declared)."""
        n = len(ids)
        uniq, inv = np.unique(ids[:, 0], return_inverse=True)
        keys = [self.meta, self.ids, self.idx, *(self.prefix + "i:" + v for v in map(str, uniq.tolist()))]
        cols = np.zeros((n, 1 + len(self._groups)), np.int64)
        cols[:, 0] = inv.reshape(-1) + 4
        rows, every = np.flatnonzero(busy), np.arange(n)
        where: dict[str, int] = {}  # events-set name -> its KEYS index (1-based)

        def declare(name: str, g: _GroupPlan) -> int:
            b = where.get(name)
            if b is None:
                b = where[name] = len(keys) + 1
                keys.append(name)
                if g.n_keys > 1:
                    keys.append(self.prefix + "w:" + name[len(self.prefix) + 2 :])
            return b

        for g in self._groups:  # a busy ip's keys; a hot group's key for every click
            at = rows if g.has_ip else every
            if len(at):
                cols[at, 1 + g.j] = [declare(g.key_format % tuple(r), g) for r in ids[at][:, g.key_fields].tolist()]
        for name in extra:
            declare(name, self._groups[int(name[len(self.prefix) + 2 :].split(":", 1)[0])])
        return keys, cols

    def score_arrays(self, ids: np.ndarray, t: np.ndarray, click_ids: Sequence[str | None] | None = None) -> np.ndarray:
        n = len(t)
        if n == 0:
            return np.empty((0, len(self.spec.feature_names)))
        ids, t = np.asarray(ids, np.int64), np.asarray(t, np.int64)
        self._check(ids, t)
        cids = "" if click_ids is None else json.dumps([("" if c is None else c) for c in click_ids])
        idempotent = click_ids is not None and all(c is not None for c in click_ids)
        extra: list[str] = []
        for _ in range(4):  # a reply asking for keys wrote nothing; the ip's keys are declared and it runs again
            busy = np.isin(ids[:, 0], self._busy_sorted) if len(self._busy) else np.zeros(n, np.bool_)
            keys, cols = self._keys(ids, busy, extra)
            flat = np.column_stack([t, cols[:, 0], ids]).ravel().tolist()
            rows = np.arange(n) if self._hot else np.flatnonzero(busy)
            group_keys = (json.dumps(np.column_stack([rows + 1, cols[rows, 1:]]).ravel().tolist(), separators=(",", ":"))
                          if len(rows) else "")
            args = [self.retention, self.late_by, json.dumps(flat, separators=(",", ":")),
                    self.small_key, cids, self.prefix, group_keys]
            reply = self._run(keys, args, idempotent)
            if reply[0] != b"need":
                break
            self._learn_busy([int(v) for v in reply[1]])
            extra = [k.decode() for k in reply[2]]
        else:
            raise StateUnavailable("Redis state: an ip's keys kept changing under the request (4 tries); try again")
        cut, text, stale = reply
        if stale:
            self._stale_cut = cut.decode()
            self._stale.update(stale)
        raw = np.fromstring(text, np.int64, sep=" ")  # text mode: C parsing (only the binary mode is deprecated)
        return self._decode(raw, t)

    def _learn_busy(self, ips: list[int]) -> None:
        if len(self._busy) + len(ips) > BUSY_IPS_KEPT:
            self._busy.clear()
        self._busy.update(ips)
        self._busy_sorted = np.array(sorted(self._busy), np.int64)

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
        """Entries held (a click counts once per key group, as in MemoryStore) and keys (a SCAN over the ips'
        keys and events sets, capped at max_keys keys), late and duplicate clicks."""

        def collect() -> StoreStats:
            meta = self.client.hgetall(self.meta)
            out = StoreStats(late_events=int(meta.get(b"late", 0)), duplicate_clicks=int(meta.get(b"dup", 0)))
            batch: list[bytes] = []

            ip_key = (self.prefix + "i:").encode()

            def flush() -> None:
                pipe = self.client.pipeline(transaction=False)
                for k in batch:
                    pipe.strlen(k) if k.startswith(ip_key) else pipe.zcard(k)
                for k, size in zip(batch, pipe.execute()):  # a small ip: 12 bytes per click; a busy one: 1
                    out.events += size // PACKED * len(self._ip_groups) if k.startswith(ip_key) else size
                batch.clear()

            for key in self.client.scan_iter(match=self.prefix.replace("{", "\\{").replace("}", "\\}") + "[ei]:*",
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
