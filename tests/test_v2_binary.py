"""The V2 binary-extension framing check (serving.v2_binary) names each mistake kserve would answer with a
500; a well-formed body passes. The running server's fuzz is in tests/test_serving_http.py."""

from __future__ import annotations

import json
import struct

import pytest

from serving.v2_binary import HEADER, problem


def _body(inputs: list[dict], raws: list[bytes], length: int | None = None) -> tuple[dict, bytes]:
    js = json.dumps({"inputs": inputs}).encode()
    return {HEADER: str(len(js) if length is None else length).encode()}, js + b"".join(raws)


def _good() -> tuple[list[dict], list[bytes]]:
    text = b"2017-11-20 10:00:00"
    return ([{"name": "ip", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}},
             {"name": "click_time", "shape": [2, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 46}}],
            [struct.pack("<2q", 1, 2), (struct.pack("<I", len(text)) + text) * 2])


def test_a_well_formed_body_passes():
    assert problem(*_body(*_good()), max_elements=10) is None


@pytest.mark.parametrize("change, message", [
    (lambda i, r: _body(i, r, length=10**6), "longer than the"),
    (lambda i, r: ({HEADER: b"12a"}, _body(i, r)[1]), "must be a byte count"),
    (lambda i, r: _body(i, r, length=5), "are not JSON"),
    (lambda i, r: _body([{**i[0], "parameters": {"binary_data_size": -16}}, i[1]], r), "non-negative integer"),
    (lambda i, r: _body([{**i[0], "parameters": {"binary_data_size": 24}}, i[1]], r), "does not match shape [2] of INT64"),
    (lambda i, r: _body([{**i[0], "shape": [3]}, i[1]], r), "does not match shape [3]"),
    (lambda i, r: _body(i, [r[0], r[1][:-1]]), "runs past the end of the body"),
    (lambda i, r: _body(i, [*r, b"x"]), "1 bytes follow the last input"),
    (lambda i, r: _body(i, [r[0], struct.pack("<I", 99) + r[1][4:]]), "4-byte little-endian lengths"),
    (lambda i, r: _body(i, [r[0], r[1][:23] + struct.pack("<I", 19) + b"\xff" * 19]), "BYTES element 1 is not UTF-8"),
    (lambda i, r: _body([{**i[0], "shape": [10**9]}, i[1]], r), "more than the limit of 10 elements"),
    (lambda i, r: _body([{**i[0], "datatype": "INT128"}, i[1]], r), "is not a V2 datatype"),
    (lambda i, r: _body([{k: v for k, v in i[0].items() if k != "parameters"}, i[1]], r), "neither \"data\" nor"),
])
def test_each_framing_mistake_is_named(change, message):
    inputs, raws = _good()
    wrong = problem(*change(inputs, raws), max_elements=10)
    assert wrong is not None and message in wrong, wrong
