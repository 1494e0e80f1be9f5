"""The reference clock that bounds how far a click may move the state's clock (docs/online-state.md).

A click more than `max_skew` seconds ahead of the reference is refused before it reaches the state, so no
client (a forged click, a device sending local time) can push the state's watermark, and with it eviction and
lateness, more than `max_skew` ahead. Two references:

- "server": the server's own clock (production: live clicks are never from the future).
- "stream": for replays of history, whose clicks are days behind the server's clock: the `quorum`-th largest
  (while fewer than 2 x quorum - 2 are known: the upper median) of the last `window` click times submitted,
  this request's included (refused ones too, so that a genuine
  jump after a quiet spell is followed once `quorum` clicks agree). Fewer than `quorum` clicks ahead move
  nothing, and the reference lags the stream's newest click by only `quorum` clicks whatever the rate (a
  median would lag by half the window: minutes on a sparse stream). A stream's first click has nothing to
  be judged against and is admitted: start a replay warm (--warm-from) or with genuine clicks.
"""

from __future__ import annotations

import threading
import time

import numpy as np

CLOCKS = ("server", "stream")
DEFAULT_MAX_SKEW = 300  # seconds
STREAM_WINDOW = 255  # recent clicks the stream reference is taken from
STREAM_QUORUM = 3  # clicks that must agree before the stream reference moves to them


class ClockSkew(ValueError):
    """A click_time too far ahead of the reference clock: a client mistake (4xx)."""

    def __init__(self, index: int, value: int, reference: int, max_skew: int, clock: str) -> None:
        self.index, self.value = index, value
        super().__init__(
            f"click_time {value} is {value - reference} s ahead of the {clock} clock ({reference}); at most "
            f"{max_skew} s (--max-clock-skew) is accepted"
        )


class ReferenceClock:
    """Admits batches of click times; thread-safe."""

    def __init__(self, kind: str = "server", max_skew: int = DEFAULT_MAX_SKEW, window: int = STREAM_WINDOW,
                 quorum: int = STREAM_QUORUM) -> None:
        if kind not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, not {kind!r}")
        if max_skew < 0:
            raise ValueError(f"max clock skew must be >= 0 s, got {max_skew}")
        self.kind, self.max_skew = kind, int(max_skew)
        self._recent = np.zeros(0, np.int64)
        self._window, self._quorum = window, quorum
        self._lock = threading.Lock()

    def reference(self, t: np.ndarray | None = None) -> int | None:
        """The reference second (for "stream": of the recent clicks plus `t`); None while no click is known."""
        if self.kind == "server":
            return int(time.time())
        seen = self._recent if t is None else np.concatenate([self._recent, t])
        seen = seen[-max(self._window, 0 if t is None else len(t)):]
        if not len(seen):
            return None
        # the quorum-th largest, or while few clicks are known, the (upper) median: of two clicks, one forged
        # ahead, the genuine one; of three, one of them forged behind, a genuine one
        return int(np.sort(seen)[-min(self._quorum, len(seen) // 2 + 1)])

    def observe(self, t: np.ndarray) -> None:
        """Learn click times without judging them (a warm start's replay of accepted clicks)."""
        if self.kind == "stream":
            with self._lock:
                self._recent = np.concatenate([self._recent, np.asarray(t, np.int64)])[-self._window:]

    def admit(self, t: np.ndarray) -> None:
        """Raise ClockSkew naming the first click more than max_skew ahead of the reference."""
        with self._lock:
            ref = self.reference(t)
            if self.kind == "stream":
                self._recent = np.concatenate([self._recent, t])[-self._window:]
            if ref is None or not len(t):
                return
            ahead = np.flatnonzero(t > ref + self.max_skew)
            if len(ahead):
                i = int(ahead[0])
                raise ClockSkew(i, int(t[i]), ref, self.max_skew, self.kind)
