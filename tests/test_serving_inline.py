"""Gate.run_inline: a few clicks on the in-process state are scored on the event loop only when no thread
holds the state; the loop never waits for the lock (the request then goes to a scoring thread), and the
in-flight limit still refuses."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from attribution.inference import InferenceCore
from serving.guard import Gate, Unavailable
from serving.model import AttributionModel

CLICK = {"ip": 7, "app": 3, "device": 1, "os": 13, "channel": 100, "click_time": "2017-11-20 10:00:00"}


@pytest.fixture(scope="module")
def core(serving_model_dir):
    return InferenceCore(serving_model_dir)


def _model(core, **gate) -> AttributionModel:
    return AttributionModel("attribution", "", core=core, gate=Gate(**gate))


async def _predict_while_ticking(model: AttributionModel, payload: dict) -> tuple[dict, float, set[str]]:
    """The answer, the longest gap between loop ticks meanwhile, and the threads that scored."""
    threads: set[str] = set()
    score = model.score
    model.score = lambda *a: (threads.add(threading.current_thread().name), score(*a))[1]
    gaps, done = [0.0], asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        out = await model.predict(payload)
    finally:
        done.set()
        await ticker
    return out, max(gaps), threads


def test_a_single_click_is_scored_on_the_loop_when_the_state_is_free(core):
    model = _model(core)
    out, _, threads = asyncio.run(_predict_while_ticking(model, {"instances": [CLICK]}))
    assert len(out["predictions"]) == 1 and threads == {threading.main_thread().name}


def test_the_loop_never_waits_for_a_state_another_thread_holds(core):
    model = _model(core)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with core._lock:  # a big batch being scored, say
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    threading.Timer(0.3, release.set).start()
    try:
        out, gap, threads = asyncio.run(_predict_while_ticking(model, {"instances": [CLICK]}))
    finally:
        release.set()
        holder.join()
    assert len(out["predictions"]) == 1
    assert threads and threading.main_thread().name not in threads, "scored on a pool thread, after the lock"
    assert gap < 0.1, f"the loop stalled {gap:.3f}s"


def test_larger_batches_and_a_full_gate_are_not_inlined(core):
    model = _model(core, inline_clicks=2)
    _, _, threads = asyncio.run(_predict_while_ticking(model, {"instances": [CLICK] * 3}))
    assert threading.main_thread().name not in threads
    full = _model(core, max_in_flight=1)
    full.gate.in_flight = 1  # another request holds the only slot
    with pytest.raises(Unavailable, match="overloaded"):
        asyncio.run(full.predict({"instances": [CLICK]}))
