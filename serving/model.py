"""KServe custom predictor: `AttributionModel` (a kserve.Model) over the inference core.

V1:  POST /v1/models/attribution:predict   {"instances": [{"ip": .., "app": .., "device": .., "os": ..,
                                             "channel": .., "click_time": "2017-11-09 04:00:00", "click_id": 7}]}
     -> {"predictions": [p, ...]}
V2:  POST /v2/models/attribution/infer      inputs named ip, app, device, os, channel (INT*/UINT*), click_time
     (BYTES "YYYY-MM-DD HH:MM:SS" or INT64 epoch seconds), optional click_id (INT64 or BYTES), each of shape
     [n] (or [n, 1]) -> output "probability" FP64 [n]. A request without "id" gets a generated one.

`predict` is a coroutine: decoding, the state and the booster run on the Gate's threads, never on the
event loop, except a few clicks on an in-process state that no thread holds (Gate.run_inline). Client mistakes raise kserve.errors.InvalidInput (400); overload, a passed deadline or an
unreachable state raise guard.Unavailable (503 with Retry-After), and the next request tries the state
again, so the predictor recovers by itself when Redis returns.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput, ServerNotReady
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from attribution.features.online.state import StateUnavailable
from attribution.inference import DEFAULT_MAX_BATCH, FIELDS, BadRequest, InferenceCore
from attribution.schema import CLICK_ID, CLICK_TIME, REQUIRED
from serving.guard import Gate, StateWatch, Unavailable

log = logging.getLogger(__name__)

INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
V2_TYPES: dict[str, frozenset[str]] = {f: INT_TYPES for f in FIELDS}
V2_TYPES[CLICK_TIME] = INT_TYPES | {"BYTES"}
V2_TYPES[CLICK_ID] = INT_TYPES | {"BYTES"}
OUTPUT = "probability"


def v1_instances(payload: Any) -> list:
    if isinstance(payload, (bytes, bytearray, str)):
        raise BadRequest("expected a JSON body (Content-Type: application/json) of the form {\"instances\": [...]}")
    if not isinstance(payload, dict):
        raise BadRequest(f"expected a JSON object {{\"instances\": [...]}}, got {type(payload).__name__}")
    extra = sorted(set(payload) - {"instances"})
    if extra:
        raise BadRequest(f"unknown top-level field '{extra[0]}': send {{\"instances\": [click, ...]}}")
    if "instances" not in payload:
        raise BadRequest("missing \"instances\": send {\"instances\": [click, ...]}")
    return payload["instances"]


def _input_values(inp: InferInput, max_batch: int) -> list:
    """One named tensor as a list of Python values, decoded by kserve (`as_numpy`: JSON data, the binary
    extension and gRPC contents alike); the checks here only keep kserve's lenient conversions (a float or a
    boolean cast to an integer) from passing a client's mistake on as a click."""
    name, dtype, shape = inp.name, inp.datatype, inp.shape
    if dtype not in V2_TYPES[name]:
        raise BadRequest(f"datatype {dtype} not accepted (use one of {sorted(V2_TYPES[name])})", field=name)
    if not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 2 or any(
        type(d) is not int or d < 0 for d in shape
    ) or (len(shape) == 2 and shape[1] != 1):
        raise BadRequest(f"shape {shape} not accepted: use [n] or [n, 1]", field=name)
    if shape[0] > max_batch:
        raise BadRequest(f"batch of {shape[0]} clicks exceeds the limit of {max_batch} per request", field=name)
    try:
        values = inp.as_numpy().ravel()
    except (InvalidInput, ValueError, TypeError, OverflowError) as err:
        raise BadRequest(f"cannot read the data as {dtype} of shape {shape}: {err}", field=name) from None
    if getattr(inp, "_raw_data", None) is None:  # JSON data: ints for INT*, strings for BYTES, nothing cast
        given = np.asarray(inp.data, dtype=object).ravel()
        want = int if dtype != "BYTES" else str
        wrong = next((i for i, v in enumerate(given.tolist()) if type(v) is not want), None)
        if wrong is not None:
            got = type(given[wrong]).__name__
            raise BadRequest(f"{dtype} element must be {'an integer' if want is int else 'a string'}, got {got}",
                             wrong, name, given[wrong])
    out = values.tolist()
    if dtype == "BYTES":
        for i, v in enumerate(out):
            if isinstance(v, bytes):
                try:
                    out[i] = v.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadRequest("BYTES element is not UTF-8", i, name) from None
    return out


def v2_instances(request: InferRequest, max_batch: int = DEFAULT_MAX_BATCH) -> list[dict]:
    """The named input tensors as click dicts (validated afterwards by the core, like V1's)."""
    inputs: dict[str, InferInput] = {}
    for inp in request.inputs or []:
        if inp.name not in FIELDS:
            raise BadRequest(f"unknown input (expected inputs named {', '.join(FIELDS)})", field=inp.name)
        if inp.name in inputs:
            raise BadRequest("input given twice", field=inp.name)
        inputs[inp.name] = inp
    for f in REQUIRED:
        if f not in inputs:
            raise BadRequest("missing input tensor", field=f)
    columns = {name: _input_values(inp, max_batch) for name, inp in inputs.items()}
    lengths = {name: len(v) for name, v in columns.items()}
    if len(set(lengths.values())) != 1:
        raise BadRequest(f"input tensors differ in length: {lengths}")
    names = list(columns)
    return [dict(zip(names, row)) for row in zip(*columns.values())]


def _clicks(payload: Any) -> int:
    """How many clicks a request claims (V1 instances, V2 first input's first dimension); a huge number when
    it does not say, so that it is never scored inline."""
    try:
        if isinstance(payload, InferRequest):
            return int(payload.inputs[0].shape[0])
        return len(payload["instances"])
    except (TypeError, KeyError, IndexError, ValueError, AttributeError):
        return 1 << 62


class AttributionModel(Model):
    """P(attributed) for clicks, from the raw fields, with window features from the online state."""

    def __init__(
        self,
        name: str,
        model_dir: str,
        state: str = "memory",
        max_batch: int = DEFAULT_MAX_BATCH,
        core: InferenceCore | None = None,
        gate: Gate | None = None,
        state_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name)
        self.state_options = state_options or {}  # InferenceCore's clock, skew, lateness and warm-start arguments
        self.model_dir = model_dir
        self.state = state
        self.max_batch = max_batch
        self.gate = gate or Gate()
        self.core = core
        self.watch: StateWatch | None = None
        if core is not None:
            self.watch = StateWatch(core)
            self.ready = True

    def load(self) -> bool:
        """Load the model directory (refusing another feature spec); ready only once it can score."""
        self.core = InferenceCore(self.model_dir, self.state, self.max_batch, **self.state_options)
        self.watch = StateWatch(self.core)
        self.ready = True
        return self.ready

    async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None) -> dict | InferResponse:
        if self.core is None:
            raise ServerNotReady("the model is not loaded")
        self.watch.start_async()
        if self.watch.down() is not None:  # validated (a client's mistake is still a 400), then refused
            return await self.gate.run(self.score, payload, True, stateless=True)
        if _clicks(payload) <= self.gate.inline_clicks and self.core.hold_if_free():
            try:  # a few clicks on the in-process state, which no thread holds: cheaper here than a thread hop
                return self.gate.run_inline(self.score, payload)
            finally:
                self.core.release()
        return await self.gate.run(self.score, payload)

    def score(self, payload: dict | InferRequest, refuse: bool = False) -> dict | InferResponse:
        """The whole request, blocking: decode, validate, state, booster (a Gate thread runs this)."""
        core = self.core
        v2 = isinstance(payload, InferRequest)
        try:
            instances = v2_instances(payload, core.max_batch) if v2 else v1_instances(payload)
        except BadRequest as err:
            core.count_bad_request()
            raise InvalidInput(str(err)) from err
        try:
            batch = core.validate(instances)
        except BadRequest as err:
            raise InvalidInput(str(err)) from err
        down = self.watch.down()
        if refuse or down is not None:
            core.count_state_error()
            raise Unavailable(down or "online feature state unavailable: a ping is stalled")
        try:
            p = core.predict_batch(batch)
        except StateUnavailable as err:
            log.warning("refusing a request: %s", err)
            raise Unavailable(f"online feature state unavailable: {err}") from err
        # click ids when the prediction log made some (clicks sent without one): the client names them in postbacks
        click_ids = batch.click_ids if batch.made_ids else None
        if not v2:
            return {"predictions": p.tolist(), "click_ids": click_ids} if click_ids else {"predictions": p.tolist()}
        outputs = [InferOutput(name=OUTPUT, shape=[len(p)], datatype="FP64", data=p.tolist())]
        if click_ids:
            outputs.append(InferOutput(name="click_id", shape=[len(p)], datatype="BYTES", data=click_ids))
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=outputs
        )
