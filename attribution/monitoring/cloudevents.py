"""KServe's own inference logger (`spec.predictor.logger`, CloudEvents in binary mode) as prediction-log rows.

KServe posts the request and the response as two events sharing `ce-id`, typed
`org.kubeflow.serving.inference.request` / `...response`; the body is the V1 JSON as the predictor saw it
(`{"instances": [...]}` / `{"predictions": [...]}`). A pair makes one row per click; a half waits for the
other for a bounded time and a bounded number of pairs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from attribution.schema import CLICK_ID, CLICK_TIME, ID_FIELDS, to_epoch

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
EVENT_TYPES = (REQUEST_TYPE, RESPONSE_TYPE)


class EventError(ValueError):
    """A malformed logger event (a 400 for the sender)."""


@dataclass
class LoggedBatch:
    """What PredictionLog.on_scored takes: the same attributes as the inference core's ClickBatch."""

    ids: np.ndarray
    t: np.ndarray
    click_ids: list[str | None] | None

    def __len__(self) -> int:
        return len(self.t)


def _batch(instances: object) -> LoggedBatch:
    from attribution.monitoring.live import PostbackError, canonical_click_id

    if not isinstance(instances, list) or not all(isinstance(c, dict) for c in instances):
        raise EventError("request event: expected {\"instances\": [click, ...]}")
    try:
        ids = np.array([[int(c[f]) for f in ID_FIELDS] for c in instances], np.int64).reshape(-1, len(ID_FIELDS))
        t = np.array([to_epoch(c[CLICK_TIME]) for c in instances], np.int64)
        click_ids = [canonical_click_id(c[CLICK_ID], i) if c.get(CLICK_ID) is not None else None
                     for i, c in enumerate(instances)]
    except (KeyError, TypeError, ValueError, PostbackError) as err:
        raise EventError(f"request event: cannot read the clicks ({err})") from None
    return LoggedBatch(ids, t, click_ids)


class EventPairs:
    """Request and response halves matched by event id; `add` returns (batch, probabilities) once both came."""

    def __init__(self, max_pending: int = 10_000, ttl: float = 300.0) -> None:
        self.max_pending, self.ttl = max_pending, ttl
        self._pending: OrderedDict[str, tuple[float, str, object]] = OrderedDict()
        self.expired = 0

    def add(self, event_id: str, event_type: str, body: object) -> tuple[LoggedBatch, np.ndarray] | None:
        if event_type not in EVENT_TYPES:
            raise EventError(f"ce-type {event_type!r} is not one of {list(EVENT_TYPES)}")
        if not isinstance(body, dict):
            raise EventError("event data must be a JSON object")
        self._expire()
        other = self._pending.pop(event_id, None)
        if other is None or other[1] == event_type:
            self._pending[event_id] = (time.monotonic(), event_type, body)
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
                self.expired += 1
            return None
        request, response = (body, other[2]) if event_type == REQUEST_TYPE else (other[2], body)
        batch = _batch(request.get("instances"))  # type: ignore[union-attr]
        p = response.get("predictions")  # type: ignore[union-attr]
        if not isinstance(p, list) or len(p) != len(batch) or not all(isinstance(v, (int, float)) for v in p):
            raise EventError(f"response event: expected {len(batch)} numeric predictions")
        return batch, np.asarray(p, np.float64)

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl
        while self._pending and next(iter(self._pending.values()))[0] < cutoff:
            self._pending.popitem(last=False)
            self.expired += 1
