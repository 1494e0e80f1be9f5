"""The inference core: one framework-neutral object that KServe's predictor and the Flask app both wrap.

    core = InferenceCore("/mnt/models", state="memory")          # or "redis://host:6379/0"
    core.predict([{"ip": 5348, "app": 19, "device": 1, "os": 13, "channel": 213,
                   "click_time": "2017-11-09 04:00:00", "click_id": 17}])   # -> array([p])

It loads the model directory once (refusing one trained with another feature spec), validates clicks given
as JSON-like dicts with the same rules as file input (attribution.schema.validate_columns: one place for the
rules; a request adds only its JSON shape and the live-time window), records them in the online state and
reads their window features (attribution.features.online.state), and scores the whole batch with one vectorised booster call. A client mistake raises `BadRequest` (a
ValueError naming the instance and the field) before the state is touched; an unreachable state backend
raises `StateUnavailable`. Adapters map these to 400 and 503.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa

from attribution.features.online.clock import DEFAULT_MAX_SKEW, ClockSkew, ReferenceClock
from attribution.features.online.state import (
    Click,
    MemoryStore,
    StateStore,
    StateUnavailable,
    StoreStats,
)
from attribution.features.spec import DEFAULT_SPEC, FeatureSpec
from attribution.schema import (
    CLICK_ID,
    CLICK_TIME,
    ID_FIELDS,
    REQUIRED,
    TIME_FORMAT,
    exact_layout_times,
    ids_in_range,
    validate_columns,
)

log = logging.getLogger(__name__)

FIELDS: tuple[str, ...] = REQUIRED + (CLICK_ID,)
_INT64_MAX = 2**63 - 1
DEFAULT_MAX_BATCH = 10_000
MAX_FUTURE_SECONDS = 86_400  # a live click cannot be from further ahead than a day of clock skew

__all__ = [
    "DEFAULT_MAX_BATCH",
    "FIELDS",
    "BadRequest",
    "ClickBatch",
    "InferenceCore",
    "StateUnavailable",
    "make_store",
    "parse_clicks",
]


class BadRequest(ValueError):
    """A client mistake: the message says which instance (0-based) and which field, and why."""

    def __init__(self, reason: str, index: int | None = None, field: str | None = None, value: object = None):
        self.reason, self.index, self.field, self.value = reason, index, field, value
        where = []
        if index is not None:
            where.append(f"instance {index}")
        if field is not None:
            where.append(f"field '{field}'")
        shown = f" (value {_short(value)})" if value is not None else ""
        message = f"{', '.join(where)}: {reason}{shown}" if where else f"{reason}{shown}"
        # Client text (field names, values) may hold lone surrogates from JSON escapes: keep the message
        # encodable, or the error response itself fails to render (a 5xx for a client mistake).
        super().__init__(message.encode("utf-8", "backslashreplace").decode("utf-8"))

    def to_dict(self) -> dict[str, Any]:
        return {"error": str(self), "instance": self.index, "field": self.field, "reason": self.reason}


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


# ---- validation ------------------------------------------------------------------------------------------
# The request's own business is its JSON shape (objects, known fields, JSON types) and the live-time window;
# every rule on values (id ranges, the time format) is the file schema's, applied by schema.validate_columns.
_ROW = itemgetter(*REQUIRED)
_FIELD_SET = frozenset(FIELDS)


@dataclass
class ClickBatch:
    """Validated clicks as arrays, which is how the state and the model read them."""

    ids: np.ndarray  # (n, 5) int64: ip, app, device, os, channel
    t: np.ndarray  # (n,) int64 epoch seconds
    click_ids: list[str | None] | None  # canonical decimal text ("007" and 7 are one click); None: no click has one
    made_ids: bool = False  # the prediction log made click_ids for clicks sent without one (see score)

    def __len__(self) -> int:
        return len(self.t)

    def columns(self) -> dict[str, np.ndarray]:
        cols = {f: self.ids[:, j] for j, f in enumerate(ID_FIELDS)}
        cols[CLICK_TIME] = self.t
        return cols


def _shape_error(instances: list | tuple) -> BadRequest:
    """The first click whose JSON shape is wrong (not an object, unknown or missing field, wrong JSON type)."""
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict):
            return BadRequest(f"expected a click object with fields {list(FIELDS)}, got {_json_type(inst)}", i)
        if not inst.keys() <= _FIELD_SET:
            extra = sorted(str(k) for k in inst.keys() - _FIELD_SET)
            return BadRequest(f"unknown field (allowed: {', '.join(FIELDS)})", i, extra[0])
        for f in FIELDS:
            if f not in inst:
                if f == CLICK_ID:
                    continue
                return BadRequest("missing required field", i, f)
            v = inst[f]
            if f == CLICK_ID and v is None:
                continue
            if type(v) is not int and not isinstance(v, str):
                want = "an integer or a time string" if f == CLICK_TIME else "a non-negative integer"
                return BadRequest(f"expected {want}, got {_json_type(v)}", i, f, v)
    raise AssertionError("no shape error found in a request the column pass refused")


def _columns(instances: list | tuple) -> tuple[list[tuple], list | None]:
    """The required fields column by column, and the click_ids (None when no click has one). Checks the
    shape a whole column at a time; on any doubt `_shape_error` walks the clicks to name the first mistake."""
    if set(map(type, instances)) != {dict}:
        raise _shape_error(instances)
    try:
        columns = list(zip(*map(_ROW, instances)))
    except KeyError:
        raise _shape_error(instances) from None
    with_id = sum(CLICK_ID in inst for inst in instances)
    if sum(map(len, instances)) != len(instances) * len(REQUIRED) + with_id:
        raise _shape_error(instances)  # an unknown field somewhere
    ids = None
    if with_id:
        ids = [inst.get(CLICK_ID) for inst in instances]
        if ids.count(None) == len(ids):
            ids = None
    return columns, ids


def _check_json_types(instances: list | tuple, columns: list[tuple], ids: list | None) -> None:
    """Every value an integer or a string (click_id also null); the typed path has checked its own."""
    if any(not set(map(type, col)) <= {int, str} for col in columns) or (
        ids is not None and not set(map(type, ids)) <= {int, str, type(None)}
    ):
        raise _shape_error(instances)


def _text(values: Sequence, field: str) -> pa.Array:
    try:
        return pa.array([v if type(v) is str else str(v) for v in values], pa.string())
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape ("\ud800"): not text anyone can store
        i = next(i for i, v in enumerate(values) if type(v) is str and not _encodes(v))
        raise BadRequest("text is not valid Unicode (a lone surrogate)", i, field, values[i]) from None


def _encodes(v: str) -> bool:
    try:
        v.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _column(values: Sequence, field: str) -> pa.Array:
    """int64 when every value is an int that fits, else text (the schema then reads digits or reports)."""
    if set(map(type, values)) == {int}:
        try:
            return pa.array(np.array(values, np.int64))
        except OverflowError:
            pass
    return _text(values, field)


def _time_column(values: Sequence, now: int) -> pa.Array:
    """Epoch seconds checked against the live window here (files have no "now"); text goes to the schema."""
    ints = [(i, v) for i, v in enumerate(values) if type(v) is int]
    for i, v in ints:
        if not 0 <= v <= now + MAX_FUTURE_SECONDS:
            raise BadRequest("epoch seconds out of range (0 .. now + 1 day)", i, CLICK_TIME, v)
    if len(ints) == len(values):
        return pa.array(np.array(values, np.int64))
    if ints:  # mixed: epochs to the text form, so one parser reads them all
        values = list(values)
        for i, v in ints:
            values[i] = time.strftime(TIME_FORMAT, time.gmtime(v))
    return _text(values, CLICK_TIME)


def _typed(columns: list[tuple], ids: list | None, now: int) -> ClickBatch | None:
    """The usual request (integer ids, times all text or all epochs, integer or no click_ids) straight to
    arrays, checked by the schema's own array rules; None at any doubt, and validate_columns decides."""
    try:
        if any(set(map(type, col)) != {int} for col in columns[:5]):
            return None
        id_array = np.array(columns[:5], np.int64).T
        times = columns[5]
        t = np.array(times, np.int64) if set(map(type, times)) == {int} else exact_layout_times(times)
    except OverflowError:
        return None
    if t is None or not ids_in_range(id_array) or t.min() < 0 or t.max() > now + MAX_FUTURE_SECONDS:
        return None
    click_ids = None
    if ids is not None:
        if not set(map(type, ids)) <= {int, type(None)} or any(v is not None and v < 0 for v in ids):
            return None
        if any(v is not None and v > _INT64_MAX for v in ids):
            return None
        click_ids = [None if v is None else str(v) for v in ids]
    return ClickBatch(np.ascontiguousarray(id_array), t, click_ids)


def _validate(instances: list | tuple, now: int) -> ClickBatch:
    columns, ids = _columns(instances)
    fast = _typed(columns, ids, now)
    if fast is not None:
        return fast
    _check_json_types(instances, columns, ids)
    arrays = {f: _column(columns[j], f) for j, f in enumerate(ID_FIELDS)}
    arrays[CLICK_TIME] = _time_column(columns[len(ID_FIELDS)], now)
    if ids is not None:
        arrays[CLICK_ID] = _column([0 if v is None else v for v in ids], CLICK_ID)
    values, bad = validate_columns(arrays, len(instances))
    if len(bad.positions):
        i, f = int(bad.positions[0]), bad.fields[0]
        shown = ids[i] if f == CLICK_ID else columns[REQUIRED.index(f)][i]
        raise BadRequest(bad.reasons[0], i, f, shown)
    t = values[CLICK_TIME]
    late = (t < 0) | (t > now + MAX_FUTURE_SECONDS)
    if late.any():
        i = int(late.argmax())
        why = "click_time is more than a day in the future" if t[i] > 0 else "click_time is before 1970"
        raise BadRequest(why, i, CLICK_TIME, columns[REQUIRED.index(CLICK_TIME)][i])
    click_ids = None
    if ids is not None:  # the state keys retries by the canonical integer, so "007" and 7 are one click
        click_ids = [None if v is None else str(c) for v, c in zip(ids, values[CLICK_ID].tolist())]
    return ClickBatch(np.stack([values[f] for f in ID_FIELDS], axis=1), t, click_ids)


def parse_clicks(instances: object, max_batch: int = DEFAULT_MAX_BATCH) -> ClickBatch:
    """Validate JSON-like clicks into arrays.

    A click is an object with ip, app, device, os, channel (non-negative integers within the schema's
    ranges, or their decimal strings), click_time ("YYYY-MM-DD HH:MM:SS" UTC, or epoch seconds) and an
    optional click_id (a non-negative integer; a retry with the same id is not recorded twice)."""
    if not isinstance(instances, (list, tuple)):
        raise BadRequest(f"expected an array of clicks, got {_json_type(instances)}")
    n = len(instances)
    if n == 0:
        raise BadRequest("empty batch: send at least one click")
    if n > max_batch:
        raise BadRequest(f"batch of {n} clicks exceeds the limit of {max_batch} per request")
    return _validate(instances, int(time.time()))


# ---- state ------------------------------------------------------------------------------------------------
def make_store(state: str, spec: FeatureSpec = DEFAULT_SPEC, max_clock_skew: int = DEFAULT_MAX_SKEW,
               allowed_lateness: int = 0) -> StateStore:
    """'memory' (in-process, one replica) or a redis:// / rediss:// / unix:// URL (shared by replicas)."""
    if state == "memory":
        return MemoryStore(spec, max_clock_skew, allowed_lateness)
    if state.startswith(("redis://", "rediss://", "unix://")):
        from attribution.features.online.redis import RedisStore

        return RedisStore(state, spec, max_clock_skew=max_clock_skew, allowed_lateness=allowed_lateness)
    raise ValueError(f"state must be 'memory' or a redis:// URL, not {state!r}")


@dataclass
class Counters:
    requests: int = 0
    clicks_scored: int = 0
    bad_requests: int = 0
    state_errors: int = 0


class InferenceCore:
    """Model + online state + validation; thread-safe; the adapters only translate HTTP."""

    def __init__(
        self,
        model_dir: str,
        state: str = "memory",
        max_batch: int = DEFAULT_MAX_BATCH,
        store: StateStore | None = None,
        nthread: int = 1,
        clock: str = "server",
        max_clock_skew: int = DEFAULT_MAX_SKEW,
        allowed_lateness: int = 0,
        warm_from: str | None = None,
    ) -> None:
        from attribution.model.bundle import ModelLoadError, load_model

        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        t0 = time.perf_counter()
        self.model_dir = str(model_dir)
        self.bundle = load_model(model_dir)
        if self.bundle.spec.hash != DEFAULT_SPEC.hash:  # load_model checks too; the predictor must never skip it
            raise ModelLoadError(
                f"model directory {model_dir} has feature spec hash {self.bundle.spec.hash}, this code "
                f"computes {DEFAULT_SPEC.hash}"
            )
        # One request is small: a single booster thread avoids OpenMP start/spin costs that dominate a click's
        # latency (and contend with other replicas); scale out with replicas, not threads.
        self.bundle.booster.set_param({"nthread": nthread})
        self.spec = self.bundle.spec
        self._feature_names = self.spec.feature_names  # a property that builds the list: once, not per request
        self.state = "memory" if store is None and state == "memory" else state
        self.store = store if store is not None else make_store(state, self.spec, max_clock_skew, allowed_lateness)
        # clicks too far ahead of this clock are refused before they reach the state (docs/online-state.md)
        self.clock = ReferenceClock(clock, max_clock_skew)
        self.max_batch = max_batch
        self.counters = Counters()
        # Called with (batch, probabilities) after each scoring, e.g. the prediction log's on_scored, which
        # may fill made click_ids into batch.click_ids; it must not block (the log queues and returns).
        self.on_scored: Callable[[ClickBatch, np.ndarray], None] | None = None
        # MemoryStore is in-process state mutated in place; Redis batches are atomic server-side (Lua) and need no lock.
        # Reentrant: a caller that must not wait takes it with `hold_if_free` and then scores under it.
        self._lock = threading.RLock() if isinstance(self.store, MemoryStore) else None
        self._count_lock = threading.Lock()
        if isinstance(self.store, MemoryStore):
            # Compile (or load from numba's cache) the state kernels now, on a scratch store, so that the
            # server reports ready only when the first request will not wait seconds for the compiler.
            MemoryStore(self.spec).score([Click(1, 1, 1, 1, 1, 1_500_000_000)])
        if warm_from:
            from attribution.features.online.warm import warm_start

            warm_start(self.store, warm_from, self.clock)
        log.info(
            "loaded model %s (spec %s) with %s state in %.2fs",
            model_dir, self.spec.hash, type(self.store).__name__, time.perf_counter() - t0,
        )

    # ---- scoring --------------------------------------------------------------------------------------
    def validate(self, instances: object) -> ClickBatch:
        try:
            batch = parse_clicks(instances, self.max_batch)
            try:
                self.clock.admit(batch.t)
            except ClockSkew as err:
                raise BadRequest(str(err), err.index, "click_time", err.value) from None
            return batch
        except BadRequest:
            self._count(bad_requests=1)
            raise

    def predict(self, instances: object) -> np.ndarray:
        """P(attributed) for each click (JSON-like dicts), after recording them in the online state."""
        return self.predict_batch(self.validate(instances))

    def predict_batch(self, batch: ClickBatch) -> np.ndarray:
        features = self.features(batch)
        data = batch.columns()
        for j, name in enumerate(self._feature_names):
            data[name] = features[:, j]
        p = self.bundle.predict_proba(data)  # columns as arrays: a DataFrame costs more than the booster here
        self._count(requests=1, clicks_scored=len(batch))
        if self.on_scored is not None:
            self.on_scored(batch, p)
        return p

    def score(self, instances: object) -> tuple[np.ndarray, list[str | None] | None]:
        """Like `predict`, with each click's id when the prediction log made some (clicks sent without one),
        so the client can name them in postbacks; else None."""
        batch = self.validate(instances)
        p = self.predict_batch(batch)
        return p, batch.click_ids if batch.made_ids else None

    def features(self, batch: ClickBatch) -> np.ndarray:
        try:
            if self._lock is None:
                return self.store.score_arrays(batch.ids, batch.t, batch.click_ids)
            with self._lock:
                return self.store.score_arrays(batch.ids, batch.t, batch.click_ids)
        except StateUnavailable:
            self._count(state_errors=1)
            raise

    @property
    def in_process(self) -> bool:
        """True when the state lives in this process (no I/O: a small batch is a bounded amount of CPU)."""
        return self._lock is not None

    def hold_if_free(self) -> bool:
        """Take the in-process state's lock only if no other thread holds it (for a caller that must not
        wait, like an event loop); True when taken: score, then `release`."""
        return self._lock is not None and self._lock.acquire(blocking=False)

    def release(self) -> None:
        self._lock.release()

    # ---- health and metrics -----------------------------------------------------------------------------
    def ping(self) -> None:
        """Raise StateUnavailable when the state backend is down."""
        self.store.ping()

    def stats(self) -> StoreStats:
        if self._lock is None:
            return self.store.stats()
        with self._lock:
            return self.store.stats()

    def _count(self, **inc: int) -> None:
        with self._count_lock:
            for k, v in inc.items():
                setattr(self.counters, k, getattr(self.counters, k) + v)

    def count_bad_request(self) -> None:
        """For adapters that reject a request before it reaches `predict` (bad JSON, wrong content type)."""
        self._count(bad_requests=1)

    def count_state_error(self) -> None:
        """For adapters that refuse a request because they already know the state is down."""
        self._count(state_errors=1)
