"""KServe custom predictor: `AttributionModel` (a kserve.Model) over the inference core.

V1:  POST /v1/models/attribution:predict   {"instances": [{"ip": .., "app": .., "device": .., "os": ..,
                                             "channel": .., "click_time": "2017-11-09 04:00:00", "click_id": 7}]}
     -> {"predictions": [p, ...]}
V2:  POST /v2/models/attribution/infer      inputs named ip, app, device, os, channel (INT*/UINT*), click_time
     (BYTES "YYYY-MM-DD HH:MM:SS" or INT64 epoch seconds), optional click_id (INT64 or BYTES), each of shape
     [n] (or [n, 1]) -> output "probability" FP64 [n]. A request without "id" gets a generated one.

Client mistakes raise kserve.errors.InvalidInput (400); an unreachable state raises ServerNotReady (503),
and the next request tries the state again, so the predictor recovers by itself when Redis returns.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput, ServerNotReady
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from attribution.features.online.state import StateUnavailable
from attribution.inference import DEFAULT_MAX_BATCH, FIELDS, BadRequest, InferenceCore
from attribution.schema import REQUIRED

log = logging.getLogger(__name__)

INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
V2_TYPES: dict[str, frozenset[str]] = {f: INT_TYPES for f in FIELDS}
V2_TYPES["click_time"] = INT_TYPES | {"BYTES"}
V2_TYPES["click_id"] = INT_TYPES | {"BYTES"}
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


def _elements(data: Any, shape: list[int], name: str) -> list:
    """Row-major elements: a flat list, or (for shape [n, 1]) a list of one-element lists; nothing ragged."""
    if not isinstance(data, (list, tuple)):
        raise BadRequest(f"tensor data must be a list, got {type(data).__name__}", field=name)
    if all(not isinstance(v, (list, tuple, dict)) for v in data):
        return list(data)
    if len(shape) == 2 and all(
        isinstance(v, (list, tuple)) and len(v) == 1 and not isinstance(v[0], (list, tuple, dict)) for v in data
    ):
        return [v[0] for v in data]
    raise BadRequest(f"tensor data must be flat or nested as shape {shape}", field=name)


def _input_values(inp: InferInput, max_batch: int) -> list:
    name, dtype, shape = inp.name, inp.datatype, inp.shape
    if dtype not in V2_TYPES[name]:
        raise BadRequest(f"datatype {dtype} not accepted (use one of {sorted(V2_TYPES[name])})", field=name)
    if not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 2 or any(
        type(d) is not int or d < 0 for d in shape
    ) or (len(shape) == 2 and shape[1] != 1):
        raise BadRequest(f"shape {shape} not accepted: use [n] or [n, 1]", field=name)
    n = int(shape[0])
    if n > max_batch:
        raise BadRequest(f"batch of {n} clicks exceeds the limit of {max_batch} per request", field=name)
    if getattr(inp, "_raw_data", None) is not None:  # binary tensor extension / gRPC raw contents
        try:
            values = inp.as_numpy().ravel().tolist()
        except Exception as err:  # noqa: BLE001 - any malformed binary tensor is the client's
            raise BadRequest(f"cannot decode binary tensor data: {err}", field=name) from None
    else:
        values = _elements(inp.data, shape, name)
    if len(values) != math.prod(shape):
        raise BadRequest(f"shape {shape} does not match {len(values)} data elements", field=name)
    if dtype == "BYTES":
        out = []
        for i, v in enumerate(values):
            if isinstance(v, (bytes, bytearray)):
                try:
                    v = bytes(v).decode("utf-8")
                except UnicodeDecodeError:
                    raise BadRequest("BYTES element is not UTF-8", i, name) from None
            elif not isinstance(v, str):
                raise BadRequest(f"BYTES element must be a string, got {type(v).__name__}", i, name, v)
            out.append(v)
        return out
    return [v.item() if isinstance(v, np.generic) else v for v in values]


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


class AttributionModel(Model):
    """P(attributed) for clicks, from the raw fields, with window features from the online state."""

    def __init__(
        self,
        name: str,
        model_dir: str,
        state: str = "memory",
        max_batch: int = DEFAULT_MAX_BATCH,
        core: InferenceCore | None = None,
        state_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name)
        self.state_options = state_options or {}  # InferenceCore's clock, skew, lateness and warm-start arguments
        self.model_dir = model_dir
        self.state = state
        self.max_batch = max_batch
        self.core = core
        if core is not None:
            self.ready = True

    def load(self) -> bool:
        """Load the model directory (refusing another feature spec); ready only once it can score."""
        self.core = InferenceCore(self.model_dir, self.state, self.max_batch, **self.state_options)
        self.ready = True
        return self.ready

    def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None) -> dict | InferResponse:
        core = self.core
        if core is None:
            raise ServerNotReady("the model is not loaded")
        v2 = isinstance(payload, InferRequest)
        try:
            instances = v2_instances(payload, core.max_batch) if v2 else v1_instances(payload)
        except BadRequest as err:
            core.count_bad_request()
            raise InvalidInput(str(err)) from err
        try:
            p, click_ids = core.score(instances)
        except BadRequest as err:
            raise InvalidInput(str(err)) from err
        except StateUnavailable as err:
            log.warning("refusing a request: %s", err)
            raise ServerNotReady(f"online feature state unavailable: {err}") from err
        # click_ids when the prediction log made some (clicks sent without one): the client names them in postbacks
        if not v2:
            return {"predictions": p.tolist(), "click_ids": click_ids} if click_ids else {"predictions": p.tolist()}
        outputs = [InferOutput(name=OUTPUT, shape=[len(p)], datatype="FP64", data=p.tolist())]
        if click_ids:
            outputs.append(InferOutput(name="click_id", shape=[len(p)], datatype="BYTES", data=click_ids))
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=outputs
        )
