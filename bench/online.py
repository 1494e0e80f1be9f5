"""Online state benchmark: the in-process store replaying a synthetic stream in time order.

    python bench/online.py [--rows 1000000] [--batch 1] [--redis-rows 100000]

- clicks/s of OnlineFeatures over MemoryStore (record + read features), one click per call by default
- the state's size (events, keys) and process RSS after each synthetic day: it plateaus, since the state
  holds 8 h of clicks whatever the stream's length
- the same clicks squeezed in time (--squeeze): distinct counts that follow their windows against scans
- optionally the Redis store (one Lua round trip per batch of 100) on the first --redis-rows clicks
Writes bench/results/online.json and online.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import CACHE, machine, synthetic_clicks_path, write_results

from attribution.features.spec import DEFAULT_SPEC

DAY = 86_400


def ordered_frame(rows: int):
    """The synthetic clicks in time order."""
    from attribution.io import read_clicks

    return read_clicks(synthetic_clicks_path(rows)).sort_values(["click_time", "row_id"], kind="stable")


def load(rows: int):
    from attribution.features.online.state import clicks_from_frame

    return clicks_from_frame(ordered_frame(rows)[["ip", "app", "device", "os", "channel", "click_time"]])


def replay_memory(events, batch: int) -> dict:
    from attribution.features.online.state import MemoryStore, OnlineFeatures

    proc = psutil.Process()
    OnlineFeatures(MemoryStore()).score(events[:1])  # load the compiled kernels outside the timed loop
    store = MemoryStore()
    online = OnlineFeatures(store)
    start = events[0].click_time
    next_day = start + DAY
    days = []
    t0 = time.perf_counter()
    scored = 0
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        online.score(chunk)
        scored += len(chunk)
        if chunk[-1].click_time >= next_day:
            st = store.stats()
            days.append({"day": len(days) + 1, "clicks": scored, "events": st.events, "keys": st.keys,
                         "rss_mb": round(proc.memory_info().rss / 2**20, 1)})
            next_day += DAY
    elapsed = time.perf_counter() - t0
    st = store.stats()
    days.append({"day": "end", "clicks": scored, "events": st.events, "keys": st.keys,
                 "rss_mb": round(proc.memory_info().rss / 2**20, 1)})
    return {"clicks": scored, "seconds": round(elapsed, 1), "clicks_per_s": round(scored / elapsed, 1),
            "us_per_click": round(elapsed / scored * 1e6, 1), "batch": batch, "days": days}


def dense_distincts(rows: int, squeeze: int, batch: int = 1000) -> dict:
    """The same clicks squeezed into 1/squeeze of their time, so that each 8 h window holds squeeze times as
    many (full TalkingData rates are ~20x the 4-day synthetic stream's): the state with distinct counts that
    follow their windows, against the same state scanning every window (the baseline), same clicks, same
    answers. Timed over the second half, once windows are full."""
    import numpy as np

    from attribution.features.online.state import MemoryStore

    df = ordered_frame(rows)
    ids = np.ascontiguousarray(df[["ip", "app", "device", "os", "channel"]].to_numpy(np.int64))
    t = df["click_time"].to_numpy(np.int64)
    t = t[0] + (t - t[0]) // squeeze
    out: dict = {"clicks": len(t), "squeeze": squeeze, "hours": round(float(t[-1] - t[0]) / 3600, 1)}
    answers = {}
    for name, incremental_from in (("counted", 64), ("scan", 2**62)):
        store = MemoryStore(incremental_from=incremental_from)
        store.score_arrays(ids[:1], t[:1])  # compiled kernels loaded outside the timing
        store = MemoryStore(incremental_from=incremental_from)
        half = (len(t) // 2) // batch * batch
        parts = []
        for i in range(0, len(t), batch):
            if i == half:
                t0 = time.perf_counter()
            parts.append(store.score_arrays(ids[i : i + batch], t[i : i + batch]))
        elapsed = time.perf_counter() - t0
        answers[name] = np.vstack(parts)
        out[name] = {"us_per_click": round(elapsed / (len(t) - half) * 1e6, 2), "events_held": store.stats().events}
    out["same_features"] = bool(np.array_equal(answers["counted"], answers["scan"], equal_nan=True))
    return out


def replay_redis(events, batch: int) -> dict:
    from attribution.features.online.redis import RedisStore
    from attribution.features.online.state import OnlineFeatures

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = CACHE / f"redis-online-{port}"
    d.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(d)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        online = OnlineFeatures(store)
        t0 = time.perf_counter()
        for i in range(0, len(events), batch):
            online.score(events[i : i + batch])
        elapsed = time.perf_counter() - t0
        st = store.stats()
        info = store.client.info("memory")
        return {"clicks": len(events), "batch": batch, "seconds": round(elapsed, 1),
                "clicks_per_s": round(len(events) / elapsed, 1), "events": st.events, "keys": st.keys,
                "redis_used_memory_mb": round(info["used_memory"] / 2**20, 1)}
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--redis-rows", type=int, default=100_000, help="0 to skip the Redis store")
    ap.add_argument("--redis-batch", type=int, default=100)
    ap.add_argument("--squeeze", type=int, default=10, help="time compression of the dense comparison (0: skip)")
    a = ap.parse_args()
    events = load(a.rows)
    span_days = (events[-1].click_time - events[0].click_time) / DAY
    result = {"title": "Online state benchmark", "machine": machine(), "rows": a.rows, "span_days": round(span_days, 2),
              "load_avg_at_start": os.getloadavg()}
    result["memory"] = replay_memory(events, a.batch)
    print("memory", {k: v for k, v in result["memory"].items() if k != "days"}, flush=True)
    if a.squeeze:
        result["dense"] = dense_distincts(a.rows, a.squeeze)
        print("dense", result["dense"], flush=True)
    if a.redis_rows:
        result["redis"] = replay_redis(events[: a.redis_rows], a.redis_batch)
        print("redis", result["redis"], flush=True)
    result["load_avg_at_end"] = os.getloadavg()
    m = result["memory"]
    rows = [[d["day"], d["clicks"], d["events"], d["keys"], d["rss_mb"]] for d in m["days"]]
    notes = [
        (f"{a.rows:,} synthetic clicks ({span_days:.1f} days, attribution.synth.generate) replayed in time order through "
         f"OnlineFeatures + MemoryStore, {a.batch} click(s) per call: **{m['clicks_per_s']:,.0f} clicks/s** "
         f"({m['us_per_click']} µs per click: record + read all {len(DEFAULT_SPEC.feature_names)} features)."),
        f"Machine: {machine()['cpus']} CPUs shared with other jobs (load average {result['load_avg_at_start'][0]:.1f} at start).",
        "State size after each day (it plateaus: only the last 8 h of clicks are kept, keys gone quiet are evicted):",
    ]
    if a.squeeze:
        d = result["dense"]
        notes.append(f"Dense: the same clicks squeezed into {d['hours']} h ({d['squeeze']}x the rate; ~{d['counted']['events_held']:,} "
                     f"events held), batches of 1,000: **{d['counted']['us_per_click']} µs per click** with distinct counts "
                     f"that follow their windows, against {d['scan']['us_per_click']} µs scanning every window; "
                     f"same features: {d['same_features']}.")
    if a.redis_rows:
        r = result["redis"]
        notes.append(f"Redis store, first {r['clicks']:,} clicks in batches of {r['batch']}: {r['clicks_per_s']:,.0f} clicks/s, "
                     f"{r['events']:,} events in {r['keys']:,} keys, Redis used_memory {r['redis_used_memory_mb']} MB.")
    write_results("online", result, ["after day", "clicks replayed", "events held", "keys held", "process RSS MB"], rows, notes)


if __name__ == "__main__":
    main()
