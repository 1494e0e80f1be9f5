"""Online state benchmark (issue 14.5): the in-process store and the Redis store on a local redis-server.

    python bench/online.py [--busy 2000 20000 100000] [--probes 300] [--parts throughput latency bytes wide]

- clicks/s in batches of 1, 100 and 1,000 (the real sample in time order, record + read features)
- single-click latency p50/p99 for an ip holding 2k, 20k and 100k clicks in its 8 h window (the ip's clicks
  spread over the window, then one click per call at the ip's own rate, window / N seconds apart, so that as
  many clicks leave its window as enter it: the steady state of an ip that busy)
- bytes per event: Redis used_memory over the clicks held (per click, and per stored entry: a click counts
  once per key group of the spec), for the sparse sample (ips packed), one dense busy ip and many just-busy ips; the in-process store's tables; the in-process click-id memory
- the families beyond the ip (`--parts wide`: spec_with("campaign", "ip_day"), 11 key groups, 5 of them hot keys
  without ip, a 24 h horizon) beside the seed spec, same clicks, same run: clicks/s in batches of 100 and 1,000,
  Redis and client CPU per click, used_memory per click held (the real sample; and a denser resample of it, whose
  hot keys hold thousands of clicks each), the hot keys' own share (MEMORY USAGE of their sets and hashes)
- the load average beside every figure: the machine is shared (2 cores)
Writes bench/results/online.json and online.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import json

from common import RESULTS, machine

from attribution.features.spec import DEFAULT_SPEC, FeatureSpec

SAMPLE = ROOT / "tests" / "data" / "train_sample.csv.gz"
T0 = 1_510_000_000
DAY_SECONDS = 86_400


def load() -> float:
    return round(os.getloadavg()[0], 2)


def sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    from attribution.io import read_clicks

    ordered = read_clicks(SAMPLE).sort_values(["click_time", "row_id"], kind="stable")
    cols = ordered[["ip", "app", "device", "os", "channel", "click_time"]].to_numpy(np.int64)
    return np.ascontiguousarray(cols[:, :5]), np.ascontiguousarray(cols[:, 5])


def throughput(make_store, ids: np.ndarray, t: np.ndarray, batch: int, rows: int) -> dict:
    store = make_store()
    store.score_arrays(ids[:1], t[:1])  # compiled kernels / script loaded outside the timing
    n = min(rows, len(t))
    la = load()
    cpu0 = redis_cpu(store)
    t0, p0 = time.perf_counter(), time.process_time()
    for i in range(1, n, batch):
        store.score_arrays(ids[i : i + batch], t[i : i + batch])
    dt, client = time.perf_counter() - t0, time.process_time() - p0
    out = {"batch": batch, "clicks": n - 1, "seconds": round(dt, 3), "clicks_per_s": round((n - 1) / dt),
           "client_cpu_us_per_click": round(client / (n - 1) * 1e6, 1), "load_before": la, "load_after": load()}
    if cpu0 is not None:  # Redis is single-threaded: its CPU per click bounds one instance's clicks/s
        out["redis_cpu_us_per_click"] = round((redis_cpu(store) - cpu0) / (n - 1) * 1e6, 1)
    return out


def redis_cpu(store) -> float | None:
    client = getattr(store, "client", None)
    if client is None:
        return None
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def redis_call_cpu_us(url: str, calls: int = 60_000) -> float:
    """CPU of one bare redis.call (ZCOUNT on a small set) inside a script: this machine's yardstick."""
    import redis

    client = redis.Redis.from_url(url)
    client.zadd("calibrate", {str(i): i for i in range(10)})
    info0 = client.info("cpu")
    client.eval(f"for i = 1, {calls} do redis.call('ZCOUNT', KEYS[1], '0', '5') end return 0", 1, "calibrate")
    info1 = client.info("cpu")
    used = sum(info1[k] - info0[k] for k in ("used_cpu_user", "used_cpu_sys"))
    client.delete("calibrate")
    return round(used / calls * 1e6, 2)


def busy_stream(events: int, seed: int = 0, ips: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`events` clicks of `ips` ips spread over the 8 h before T0 (apps, devices, oses, channels varied)."""
    rng = np.random.default_rng(seed)
    t = T0 - DEFAULT_SPEC.max_window + np.sort(rng.integers(0, DEFAULT_SPEC.max_window, events))
    ids = np.column_stack([5348 + rng.integers(0, ips, events), rng.integers(1, 400, events), rng.integers(1, 4, events),
                           rng.integers(1, 60, events), rng.integers(100, 500, events)]).astype(np.int64)
    return ids, t.astype(np.int64)


def latency(make_store, events: int, probes: int) -> dict:
    store = make_store()
    ids, t = busy_stream(events)
    for i in range(0, events, 1000):
        store.score_arrays(ids[i : i + 1000], t[i : i + 1000])
    probe_ids, _ = busy_stream(probes, seed=1)
    spacing = DEFAULT_SPEC.max_window / events
    times = []
    la = load()
    cpu0 = redis_cpu(store)
    for k in range(probes):
        second = np.array([T0 + int(k * spacing)], np.int64)
        t0 = time.perf_counter()
        store.score_arrays(probe_ids[k : k + 1], second)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    out = {"events_in_window": events, "probes": probes, "p50_ms": round(float(np.percentile(ms, 50)), 3),
           "p99_ms": round(float(np.percentile(ms, 99)), 3), "load_before": la, "load_after": load()}
    if cpu0 is not None:  # the server's share of a request, which the machine's load distorts far less than p99
        out["redis_cpu_us_per_request"] = round((redis_cpu(store) - cpu0) / probes * 1e6, 1)
    return out


def redis_bytes(url: str, make_store, ids: np.ndarray, t: np.ndarray, label: str, spec: FeatureSpec = DEFAULT_SPEC) -> dict:
    import redis

    client = redis.Redis.from_url(url)
    client.flushall()
    base = client.info("memory")["used_memory"]
    store = make_store()
    for i in range(0, len(t), 1000):
        store.score_arrays(ids[i : i + 1000], t[i : i + 1000])
    used = client.info("memory")["used_memory"] - base
    stats = store.stats(max_keys=10**9)
    clicks = stats.events // len(spec.key_groups)  # every click held is one entry per key group
    out = {"stream": label, "clicks_held": clicks, "entries_held": stats.events, "keys": stats.keys,
           "used_memory_bytes": used, "bytes_per_click": round(used / clicks, 1),
           "bytes_per_entry": round(used / stats.events, 1)}
    hot = [j for j, g in enumerate(spec.key_groups) if "ip" not in g]
    if hot:  # the hot keys' sets and counted-window hashes, key by key (exact: SAMPLES 0)
        pipe, names = client.pipeline(transaction=False), []
        for j in hot:
            for key in client.scan_iter(match=store.prefix.replace("{", "\\{").replace("}", "\\}") + f"[ew]:{j}:*", count=1000):
                names.append(key)
                pipe.memory_usage(key, samples=0)
        sizes = pipe.execute()
        hot_bytes = sum(sizes)
        sets = sum(b for k, b in zip(names, sizes) if k.startswith((store.prefix + "e:").encode()))
        out.update(hot_keys=len(names), hot_bytes=hot_bytes, hot_bytes_per_click=round(hot_bytes / clicks, 1),
                   hot_bytes_per_entry=round(hot_bytes / clicks / len(hot), 1),
                   hot_set_bytes_per_entry=round(sets / clicks / len(hot), 1))
    return out


def resampled(ids: np.ndarray, n: int, seconds: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` of the sample's clicks drawn with replacement (its mix of ips, apps, channels..) over `seconds`: denser
    than the sample, so that its hot keys (an app, a channel) hold thousands of clicks, as at full rate."""
    rng = np.random.default_rng(seed)
    t = T0 - seconds + np.sort(rng.integers(0, seconds, n))
    return np.ascontiguousarray(ids[rng.integers(0, len(ids), n)]), t.astype(np.int64)


def memory_bytes(ids: np.ndarray, t: np.ndarray, label: str, spec: FeatureSpec = DEFAULT_SPEC) -> dict:
    from attribution.features.online.state import MemoryStore

    store = MemoryStore(spec)
    for i in range(0, len(t), 1000):
        store.score_arrays(ids[i : i + 1000], t[i : i + 1000])
    s = store.stats()
    tables = sum(a.nbytes for a in store._state.store) + store._state.marks.nbytes
    held = s.events // len(spec.key_groups)
    return {"stream": label, "clicks_held": held, "table_bytes": tables, "bytes_per_click": round(tables / max(1, held), 1)}


def wide_spec(url: str, ids: np.ndarray, t: np.ndarray, rows: int, dense: int) -> list[dict]:
    """Both stores with the families beyond the ip (issue 17.2: 11 key groups, 5 without ip, a 24 h horizon)
    beside the seed spec (6 groups, 8 h), same clicks, same run."""
    import redis

    from attribution.features.online.redis import RedisStore
    from attribution.features.online.state import MemoryStore
    from attribution.features.spec import FAMILIES, spec_with

    def fresh_redis(spec: FeatureSpec) -> RedisStore:
        redis.Redis.from_url(url).flushall()
        return RedisStore(url, spec)

    di, dt = resampled(ids, dense, DAY_SECONDS)
    out = []
    for label, spec in (("seed (8 h)", DEFAULT_SPEC), ("seed + " + " + ".join(FAMILIES) + " (24 h)", spec_with(*FAMILIES))):
        for name, make in (("memory", MemoryStore), ("redis", fresh_redis)):
            row: dict = {"store": name, "spec": label, "key_groups": len(spec.key_groups), "features": len(spec.feature_names)}
            for batch in (100, 1000):
                r = throughput(lambda spec=spec, make=make: make(spec), ids, t, batch, rows)
                row[f"clicks_per_s_{batch}"], row["load"] = r["clicks_per_s"], r["load_after"]
                row[f"client_cpu_us_per_click_{batch}"] = r["client_cpu_us_per_click"]
                if "redis_cpu_us_per_click" in r:
                    row[f"redis_cpu_us_per_click_{batch}"] = r["redis_cpu_us_per_click"]
            if name == "memory":
                row.update(memory_bytes(ids, t, "real sample", spec))
            else:
                row.update(redis_bytes(url, lambda spec=spec: RedisStore(url, spec), ids, t, "real sample", spec))
                row["dense"] = redis_bytes(url, lambda spec=spec: RedisStore(url, spec), di, dt,
                                           f"{dense:,} sample clicks resampled over 24 h", spec)
            out.append(row)
            print(row, flush=True)
    return out


def seen_id_bytes(n: int = 200_000) -> dict:
    from attribution.features.online.state import SeenIds

    tracemalloc.start()
    seen = SeenIds()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        seen.add(str(10_000_000_000 + i), T0 + i // 50)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {"ids": n, "bytes": used, "bytes_per_id": round(used / n, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--busy", type=int, nargs="+", default=[2_000, 20_000, 100_000])
    ap.add_argument("--probes", type=int, default=300)
    ap.add_argument("--rows", type=int, default=100_000, help="sample clicks for batches of 100 and 1,000")
    ap.add_argument("--single-rows", type=int, default=5_000, help="sample clicks for batches of 1")
    ap.add_argument("--dense", type=int, default=200_000, help="clicks of the dense resample (--parts wide)")
    ap.add_argument("--parts", nargs="+", default=["throughput", "latency", "bytes", "wide"],
                    help="what to measure; the other parts keep their figures from the last results")
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not on PATH")
    from attribution.features.online.redis import RedisStore
    from attribution.features.online.state import MemoryStore
    from tests.redis_fixture import RedisServer

    server = RedisServer(Path(tempfile.mkdtemp()))
    server.start()
    try:
        def fresh_redis():
            import redis

            redis.Redis.from_url(server.url).flushall()
            return RedisStore(server.url)

        stores = {"memory": MemoryStore, "redis": fresh_redis}
        ids, t = sample_arrays()
        last = RESULTS / "online.json"
        out: dict = json.loads(last.read_text()) if last.exists() and len(args.parts) < 4 else {}
        out["machine"] = machine()
        out["redis_call_cpu_us"] = redis_call_cpu_us(server.url)
        for part in args.parts:
            out[part] = []
        for name, make in stores.items() if "throughput" in args.parts else ():
            for batch in (1, 100, 1000):
                r = throughput(make, ids, t, batch, args.single_rows if batch == 1 else args.rows)
                out["throughput"].append({"store": name, **r})
                print(name, r, flush=True)
        for name, make in stores.items() if "latency" in args.parts else ():
            for events in args.busy:
                r = latency(make, events, args.probes)
                out["latency"].append({"store": name, **r})
                print(name, r, flush=True)
        if "wide" in args.parts:
            out["wide"] = wide_spec(server.url, ids, t, args.rows, args.dense)
        if "bytes" in args.parts:
            out["bytes"].append(redis_bytes(server.url, lambda: RedisStore(server.url), ids, t, "real sample"))
            bi, bt = busy_stream(100_000)
            out["bytes"].append(redis_bytes(server.url, lambda: RedisStore(server.url), bi, bt, "one ip, 100k clicks in 8 h"))
            mi, mt = busy_stream(100_000, ips=1_000)  # ~100 clicks each: just busy, most keys holding one click
            out["bytes"].append(redis_bytes(server.url, lambda: RedisStore(server.url), mi, mt, "1,000 ips, ~100 clicks each in 8 h"))
            out["memory_store_bytes"] = [memory_bytes(ids, t, "real sample"), memory_bytes(bi, bt, "one ip, 100k clicks in 8 h")]
            out["seen_ids"] = seen_id_bytes()
            print(out["bytes"], out["memory_store_bytes"], out["seen_ids"], flush=True)
    finally:
        server.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "online.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "online.md").write_text(render(out))


def render(out: dict) -> str:
    lines = ["# Online state", "", f"Machine: {out['machine']}", "",
             (f"Yardstick: one bare redis.call (ZCOUNT) inside a script costs {out.get('redis_call_cpu_us')} us of Redis "
              "CPU here (typically well under 1 us on a current server core)."), "",
             "Load average (1 min) beside each figure: the machine has 2 cores shared with other work.", "",
             "## Clicks/s (real sample in time order, record + read)", "",
             "| store | batch | clicks | clicks/s | client CPU us/click | Redis CPU us/click | load before/after |",
             "|---|---|---|---|---|---|---|"]
    for r in out["throughput"]:
        lines.append(f"| {r['store']} | {r['batch']} | {r['clicks']:,} | {r['clicks_per_s']:,} | {r['client_cpu_us_per_click']} "
                     f"| {r.get('redis_cpu_us_per_click', '')} | {r['load_before']} / {r['load_after']} |")
    lines += ["", "## Single-click latency, one ip with N clicks in its window", "",
              "| store | N | p50 ms | p99 ms | Redis CPU us/request | load before/after |", "|---|---|---|---|---|---|"]
    for r in out["latency"]:
        lines.append(f"| {r['store']} | {r['events_in_window']:,} | {r['p50_ms']} | {r['p99_ms']} "
                     f"| {r.get('redis_cpu_us_per_request', '')} | {r['load_before']} / {r['load_after']} |")
    lines += ["", "## Bytes per event", "", "| store | stream | clicks held | bytes/click | bytes/entry |", "|---|---|---|---|---|"]
    for r in out["bytes"]:
        lines.append(f"| redis used_memory | {r['stream']} | {r['clicks_held']:,} | {r['bytes_per_click']} | {r['bytes_per_entry']} |")
    for r in out["memory_store_bytes"]:
        lines.append(f"| memory tables | {r['stream']} | {r['clicks_held']:,} | {r['bytes_per_click']} | |")
    s = out["seen_ids"]
    lines += ["", f"In-process click ids: {s['bytes_per_id']} B per id ({s['ids']:,} ids, tracemalloc).", ""]
    if out.get("wide"):
        lines += ["## Both stores with the families beyond the ip (campaign + ip_day: hot keys, 24 h horizon)", "",
                  "Real sample in time order, record + read; bytes: memory tables or Redis used_memory over the clicks held.", "",
                  ("| store | spec | key groups | features | clicks/s @100 | clicks/s @1,000 | Redis CPU us/click @100 / @1,000 "
                   "| client CPU us/click @100 / @1,000 | clicks held | bytes/click | load |"),
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in out["wide"]:
            rc = f"{r['redis_cpu_us_per_click_100']} / {r['redis_cpu_us_per_click_1000']}" if "redis_cpu_us_per_click_100" in r else ""
            lines.append(f"| {r.get('store', 'memory')} | {r['spec']} | {r['key_groups']} | {r['features']} | {r['clicks_per_s_100']:,} "
                         f"| {r['clicks_per_s_1000']:,} | {rc} | {r.get('client_cpu_us_per_click_100', '')} / "
                         f"{r.get('client_cpu_us_per_click_1000', '')} | {r['clicks_held']:,} | {r['bytes_per_click']} | {r['load']} |")
        dense = [r for r in out["wide"] if "dense" in r]
        if dense:
            lines += ["", ("Redis used_memory per click held, the real sample and a denser resample of it (hot keys: the sets "
                           "and counted-window hashes of the groups without ip, MEMORY USAGE key by key):"), "",
                      "| spec | stream | clicks held | keys | bytes/click | hot keys | hot bytes/click | hot bytes/entry | of which sets |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for r in dense:
                for b in (r, r["dense"]):
                    lines.append(f"| {r['spec']} | {b['stream']} | {b['clicks_held']:,} | {b['keys']:,} | {b['bytes_per_click']} "
                                 f"| {b.get('hot_keys', '')} | {b.get('hot_bytes_per_click', '')} | {b.get('hot_bytes_per_entry', '')} "
                                 f"| {b.get('hot_set_bytes_per_entry', '')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
