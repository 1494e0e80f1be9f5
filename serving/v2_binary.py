"""The framing of a KServe V2 binary-extension request, checked before kserve decodes it.

With the binary tensor extension a body is a JSON header of `Inference-Header-Content-Length` bytes followed
by each input's raw bytes, `parameters.binary_data_size` of them per input, in input order. kserve slices
the body by those numbers and trusts them: a size that is not a number, runs past the body or does not fit
the tensor's shape ends in an exception it answers with a 500. `problem` finds each such mistake and says
which; a body it passes decodes without error, and what it holds is then checked like any other request
(serving.model). JSON bodies without the header are kserve's JSON path, which validates them itself.
"""

from __future__ import annotations

import math
import struct

import orjson

HEADER = b"inference-header-content-length"
ITEM_BYTES = {"BOOL": 1, "INT8": 1, "INT16": 2, "INT32": 4, "INT64": 8, "UINT8": 1, "UINT16": 2, "UINT32": 4,
              "UINT64": 8, "FP16": 2, "FP32": 4, "FP64": 8}
_LENGTH = struct.Struct("<I")


def applies(method: str, path: str, headers: dict[bytes, bytes]) -> bool:
    return method == "POST" and path.startswith("/v2/models/") and path.endswith("/infer") and HEADER in headers


def problem(headers: dict[bytes, bytes], body: bytes, max_elements: int) -> str | None:
    """What is wrong with a binary-extension request's framing, or None. `max_elements` bounds each tensor
    (the batch limit), so that no claimed shape makes this or kserve walk millions of elements."""
    raw = headers[HEADER]
    if not raw.isdigit():
        return f"header Inference-Header-Content-Length must be a byte count, got {raw[:40]!r}"
    n = int(raw)
    if n > len(body):
        return f"header Inference-Header-Content-Length is {n}, longer than the {len(body)}-byte body"
    try:
        head = orjson.loads(body[:n])
    except orjson.JSONDecodeError as err:
        return f"the first {n} bytes (Inference-Header-Content-Length) are not JSON: {err}"
    if not isinstance(head, dict):
        return f"the JSON header must be an object with \"inputs\", got {type(head).__name__}"
    wrong = _envelope(head)
    if wrong:
        return wrong
    offset = n
    for k, tensor in enumerate(head["inputs"]):
        wrong, size = _tensor(k, tensor, body, offset, max_elements)
        if wrong:
            return wrong
        offset += size
    if offset != len(body):
        return f"{len(body) - offset} bytes follow the last input's binary data (binary_data_size too small?)"
    return None


def _envelope(head: dict) -> str | None:
    inputs = head.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return "\"inputs\" must be a non-empty array of input tensors"
    if head.get("id") is not None and not isinstance(head["id"], str):
        return "\"id\" must be a string"
    if head.get("parameters") is not None and not isinstance(head["parameters"], dict):
        return "\"parameters\" must be an object"
    outputs = head.get("outputs")
    if outputs is not None and not (isinstance(outputs, list) and all(
        isinstance(o, dict) and isinstance(o.get("name"), str)
        and (o.get("parameters") is None or isinstance(o["parameters"], dict)) for o in outputs
    )):
        return "\"outputs\" must be an array of objects with a string \"name\""
    return None


def _tensor(k: int, t: object, body: bytes, offset: int, max_elements: int) -> tuple[str | None, int]:
    """(what is wrong with inputs[k], the binary bytes it takes)."""
    if not isinstance(t, dict):
        return f"inputs[{k}] must be an object", 0
    name = t.get("name")
    if not isinstance(name, str):
        return f"inputs[{k}]: \"name\" must be a string", 0
    where = f"input '{name}'".encode("utf-8", "backslashreplace").decode()
    datatype, shape, params = t.get("datatype"), t.get("shape"), t.get("parameters")
    if datatype != "BYTES" and datatype not in ITEM_BYTES:
        return f"{where}: datatype {str(datatype)[:20]!r} is not a V2 datatype", 0
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        return f"{where}: \"shape\" must be an array of non-negative integers", 0
    if params is not None and not isinstance(params, dict):
        return f"{where}: \"parameters\" must be an object", 0
    if t.get("data") is not None:
        return None, 0  # JSON data in the header: decoded and checked like a JSON request's
    size = (params or {}).get("binary_data_size")
    if size is None:
        return f"{where}: neither \"data\" nor parameters.binary_data_size", 0
    if type(size) is not int or size < 0:
        return f"{where}: binary_data_size must be a non-negative integer, got {str(size)[:20]!r}", 0
    if offset + size > len(body):
        return f"{where}: binary_data_size {size} runs past the end of the body ({len(body) - offset} bytes left)", 0
    count = math.prod(shape)
    if count > max_elements:
        return f"{where}: shape {shape[:4]} holds more than the limit of {max_elements} elements per request", 0
    if datatype == "BYTES":
        elements = _bytes_elements(body, offset, offset + size, count)
        if elements is None:
            return f"{where}: BYTES data must be 4-byte little-endian lengths each followed by that many bytes", 0
        if elements < 0:
            return f"{where}: BYTES element {-elements - 1} is not UTF-8 text", 0
        if elements != count:
            return f"{where}: {elements} BYTES elements for shape {shape}", 0
    elif size != count * ITEM_BYTES[datatype]:
        return f"{where}: binary_data_size {size} does not match shape {shape} of {datatype} ({count * ITEM_BYTES[datatype]} bytes)", 0
    return None, size


def _bytes_elements(body: bytes, start: int, end: int, count: int) -> int | None:
    """How many length-prefixed elements fill body[start:end] exactly (counting stops past `count`); None
    when they do not fill it, -1 - k when element k is not UTF-8 (kserve decodes each one as text)."""
    n = 0
    while start < end and n <= count:
        if start + 4 > end:
            return None
        length = _LENGTH.unpack_from(body, start)[0]
        start += 4
        if start + length > end:
            return None
        try:
            body[start : start + length].decode("utf-8")
        except UnicodeDecodeError:
            return -1 - n
        start += length
        n += 1
    return n
