"""What keeps a predictor answering when its state or its CPU cannot keep up.

`Gate` runs scoring (validation, the state round trip, the booster) on a bounded thread pool, never on the
event loop; it admits at most `max_in_flight` requests (the next one is refused at once: 503 with
Retry-After) and gives each a deadline (503 when it passes; work still queued then is dropped before it
touches the state). The one exception is `run_inline`: a request of at most `inline_clicks` clicks on the
in-process state, when no thread holds that state, is scored on the loop itself. That is a bounded amount
of CPU and no I/O (a fraction of a millisecond per click, less than the thread hop costs: bench/serve.py),
and it never waits on a lock; anything else (Redis, larger batches, a state another thread is scoring on)
goes to the pool. `StateWatch` pings the state and reads its size off the request path, on a schedule:
`/metrics` reads its snapshot, and predictions are refused at once while the state does not answer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from attribution.features.online.state import MemoryStore, StateUnavailable, StoreStats
from attribution.inference import InferenceCore

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MAX_IN_FLIGHT = 64
DEFAULT_DEADLINE_S = 1.0
DEFAULT_SCORE_THREADS = 4
DEFAULT_INLINE_CLICKS = 16  # ~0.5 ms of loop time at most (bench/serve.py: core only, per click)
STATS_MAX_KEYS = 200_000  # a SCAN beyond this many Redis keys is cut short; `capped` says so


class Unavailable(Exception):
    """A 503 the client should retry after `retry_after` seconds (overload, deadline, state down)."""

    def __init__(self, reason: str, retry_after: int = 1) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Gate:
    """Admission (a count of requests in flight, kept on the event loop's thread) and a deadline per request."""

    def __init__(
        self,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        deadline_s: float = DEFAULT_DEADLINE_S,
        threads: int = DEFAULT_SCORE_THREADS,
        inline_clicks: int = DEFAULT_INLINE_CLICKS,
    ) -> None:
        if max_in_flight < 1 or deadline_s <= 0 or threads < 1 or inline_clicks < 0:
            raise ValueError("max_in_flight and threads must be >= 1, the deadline > 0, inline_clicks >= 0")
        self.max_in_flight, self.deadline_s, self.inline_clicks = max_in_flight, deadline_s, inline_clicks
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="score")
        # Requests that will not touch the state (only validated, then refused) never queue behind scoring
        # threads a stalled state holds.
        self.triage = ThreadPoolExecutor(2, thread_name_prefix="triage")
        self.in_flight = 0
        self.refused = {"overloaded": 0, "deadline": 0}

    def _admit(self) -> None:
        if self.in_flight >= self.max_in_flight:
            self.refused["overloaded"] += 1
            raise Unavailable(f"overloaded: {self.in_flight} requests in flight (limit {self.max_in_flight})")
        self.in_flight += 1

    def run_inline(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn` on the caller's thread (the loop), admitted like any request; for work known to be short and
        free of I/O and of waiting (see the module docstring)."""
        self._admit()
        try:
            return fn(*args)
        finally:
            self.in_flight -= 1

    async def run(self, fn: Callable[..., T], *args: Any, stateless: bool = False) -> T:
        self._admit()  # released when the work ends, not when the client gives up: it still holds a thread
        due = time.monotonic() + self.deadline_s
        pool = self.triage if stateless else self.pool
        future = asyncio.get_running_loop().run_in_executor(pool, _before, due, fn, *args)
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.deadline_s)
        except (TimeoutError, _Late):
            self.refused["deadline"] += 1
            raise Unavailable(f"deadline of {self.deadline_s * 1000:.0f} ms exceeded") from None

    def _release(self, future: asyncio.Future) -> None:
        self.in_flight -= 1
        if not future.cancelled():
            future.exception()  # retrieved, so a late failure is not logged as "never retrieved"


class _Late(Exception):
    pass


def _before(due: float, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn` unless its request's deadline has passed while it waited for a thread (then it never starts,
    and the state is untouched)."""
    if time.monotonic() > due:
        raise _Late
    return fn(*args)


@dataclass
class StateSnapshot:
    """The state as last seen: whether it answered, its size, and Redis-wide figures (one per Redis)."""

    up: bool = True
    error: str | None = None
    stats: StoreStats | None = None
    capped: bool = False  # the key SCAN stopped at STATS_MAX_KEYS: keys/events are lower bounds
    redis: dict[str, float] = field(default_factory=dict)  # dbsize, used_memory
    at: float = 0.0  # monotonic time of the stats


class StateWatch:
    """Pings the state every `ping_every` s and reads its stats every `stats_every` s, off the request path.

    `down()` is a reason while a ping has waited longer than `probe_timeout` (a paused or overloaded Redis
    blocks a socket for its full timeout; requests need not find out one by one). After a failed ping the
    next one starts at once, so a stall is seen again within `probe_timeout`."""

    def __init__(
        self,
        core: InferenceCore,
        ping_every: float = 0.2,
        stats_every: float = 2.0,
        probe_timeout: float = 0.1,
        max_keys: int = STATS_MAX_KEYS,
    ) -> None:
        self.core = core
        self.ping_every, self.stats_every, self.probe_timeout, self.max_keys = ping_every, stats_every, probe_timeout, max_keys
        self.shared = not isinstance(core.store, MemoryStore)  # Redis: the figures are the whole state's, not this pod's
        self.snapshot = StateSnapshot()
        self._ping_since: float | None = None
        self._stalled = False
        self._started = False

    # ---- the probes themselves (blocking; run on a watch thread) ----------------------------------------------
    def ping_once(self) -> bool:
        started = self._ping_since = time.monotonic()
        try:
            self.core.ping()
            self.snapshot.up, self.snapshot.error = True, None
        except StateUnavailable as err:
            self.snapshot.up, self.snapshot.error = False, str(err)
        finally:
            self._ping_since = None
        # A ping that stalled and then failed (a socket timeout) keeps the state stalled until one succeeds.
        self._stalled = not self.snapshot.up and time.monotonic() - started > self.probe_timeout
        return self.snapshot.up

    def stats_once(self) -> None:
        try:
            if self.shared:
                stats = self.core.store.stats(max_keys=self.max_keys)
                info = self.core.store.client.info("memory")
                redis = {"dbsize": float(self.core.store.client.dbsize()), "used_memory": float(info["used_memory"])}
            else:
                stats, redis = self.core.stats(), {}
        except StateUnavailable as err:
            self.snapshot.up, self.snapshot.error = False, str(err)
            return
        except Exception:
            log.exception("reading the state's stats failed")
            return
        self.snapshot = StateSnapshot(self.snapshot.up, self.snapshot.error, stats,
                                      self.shared and stats.keys >= self.max_keys, redis, time.monotonic())

    def down(self) -> str | None:
        """Why requests should not wait on the state now: a ping has waited longer than `probe_timeout`
        (a paused or black-holed Redis), or the last one failed after such a wait. A refused connection fails
        each request fast by itself, and a request may find the state back before the next ping does, so a
        quickly failed ping refuses nothing."""
        since = self._ping_since
        if since is not None and time.monotonic() - since > self.probe_timeout:
            return f"online feature state unavailable: no answer to a ping for {time.monotonic() - since:.2f}s"
        if self._stalled:
            return f"online feature state unavailable: {self.snapshot.error}"
        return None

    # ---- schedules ----------------------------------------------------------------------------------------------
    def start_async(self) -> None:
        """On the running event loop (KServe): two tasks, each awaiting its probe on its own thread."""
        if self._started:
            return
        self._started = True
        pool = ThreadPoolExecutor(2, thread_name_prefix="state-watch")
        loop = asyncio.get_running_loop()

        async def every(seconds: float, probe: Callable[[], bool | None]) -> None:
            while True:
                if await loop.run_in_executor(pool, probe) is not False:
                    await asyncio.sleep(seconds)
                else:
                    await asyncio.sleep(0.05)  # failed: probe again soon (a refused connection fails fast)

        self._tasks = [loop.create_task(every(self.ping_every, self.ping_once)),
                       loop.create_task(every(self.stats_every, self.stats_once))]

    def start_threads(self) -> None:
        """Daemon threads (a Flask worker)."""
        if self._started:
            return
        self._started = True

        def every(seconds: float, probe: Callable[[], bool | None]) -> None:
            while True:
                time.sleep(seconds if probe() is not False else 0.05)

        for seconds, probe in ((self.ping_every, self.ping_once), (self.stats_every, self.stats_once)):
            threading.Thread(target=every, args=(seconds, probe), daemon=True, name="state-watch").start()
