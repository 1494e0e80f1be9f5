"""Real servers on loopback (in-process state): the KServe predictor (V1 and V2) and the Flask app under
gunicorn replay the real sample in time order and answer exactly what batch scoring gives; malformed
requests (hand-picked and >= 2,000 fuzzed) get 4xx with a reason, never change the state, never a 5xx."""

from __future__ import annotations

import json
import struct
import time

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attribution.schema import ID_FIELDS, ID_LIMITS
from serving import max_body_bytes
from tests.redis_fixture import (
    DAY,
    ServerProcess,
    click_dicts,
    metric,
    replay_order,
)

BATCH = 500
MAX_BATCH = 1000
GOOD = {"ip": 1, "app": 2, "device": 3, "os": 4, "channel": 5, "click_time": "2017-11-20 10:00:00"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def ordered(sample_clicks):
    return replay_order(sample_clicks)


@pytest.fixture(scope="module")
def kserve(serving_model_dir, tmp_path_factory):
    srv = ServerProcess("kserve", serving_model_dir, "memory", tmp_path_factory.mktemp("kserve"), max_batch=MAX_BATCH)
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def flask_server(serving_model_dir, tmp_path_factory):
    srv = ServerProcess("flask", serving_model_dir, "memory", tmp_path_factory.mktemp("flask"), max_batch=MAX_BATCH)
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def v2_body(clicks: list[dict], text_time: bool) -> dict:
    n = len(clicks)
    inputs = [{"name": f, "shape": [n], "datatype": "INT64", "data": [c[f] for c in clicks]} for f in ID_FIELDS]
    inputs.append({"name": "click_time", "shape": [n], "datatype": "BYTES" if text_time else "INT64",
                   "data": [c["click_time"] for c in clicks]})
    return {"inputs": inputs}  # no "id": the server makes one


def v2_binary(clicks: list[dict], text_time: bool) -> tuple[dict, list[bytes], str]:
    """The V2 binary tensor extension's parts: the JSON header, each input's raw bytes, the datatype of
    click_time (BYTES: 4-byte little-endian length then UTF-8; INT64: little-endian)."""
    n = len(clicks)
    raws = [np.asarray([c[f] for c in clicks], "<i8").tobytes() for f in ID_FIELDS]
    inputs = [{"name": f, "shape": [n], "datatype": "INT64"} for f in ID_FIELDS]
    if text_time:
        raws.append(b"".join(struct.pack("<I", len(t)) + t for t in (c["click_time"].encode() for c in clicks)))
    else:
        raws.append(np.asarray([c["click_time"] for c in clicks], "<i8").tobytes())
    inputs.append({"name": "click_time", "shape": [n], "datatype": "BYTES" if text_time else "INT64"})
    for inp, raw in zip(inputs, raws):
        inp["parameters"] = {"binary_data_size": len(raw)}
    return {"inputs": inputs}, raws, inputs[-1]["datatype"]


def framed(head: dict | bytes, raws: list[bytes], length: int | str | None = None) -> tuple[bytes, dict]:
    """(body, headers) of a binary-extension request; `length` overrides Inference-Header-Content-Length."""
    js = head if isinstance(head, bytes) else json.dumps(head).encode()
    return js + b"".join(raws), {"Inference-Header-Content-Length": str(len(js) if length is None else length),
                                 "Content-Type": "application/octet-stream"}


def replay(post, clicks: list[dict]) -> np.ndarray:
    out = []
    for i in range(0, len(clicks), BATCH):
        out.extend(post(clicks[i : i + BATCH]))
    return np.asarray(out, dtype=np.float64)


# ---- parity ------------------------------------------------------------------------------------------------
def test_kserve_v1_replay_matches_batch_scoring(kserve, ordered, expected_sample_probabilities):
    s = requests.Session()

    def post(batch):
        r = s.post(f"{kserve.base}/v1/models/attribution:predict", json={"instances": batch}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["predictions"]

    got = replay(post, click_dicts(ordered))
    np.testing.assert_allclose(got, expected_sample_probabilities[ordered["row_id"].to_numpy()], rtol=0, atol=1e-6)


def test_kserve_v2_replay_matches_batch_scoring(kserve, ordered, expected_sample_probabilities):
    """A week later (whole days keep the hour features; the V1 replay is beyond the 8 h horizon), with
    click_time as epoch INT64 and as BYTES text on alternate batches, every third batch in the binary tensor
    extension (raw little-endian INT64 and length-prefixed BYTES after the JSON header)."""
    s = requests.Session()
    n_batches = [0]

    def post(batch):
        text = n_batches[0] % 2 == 1
        n_batches[0] += 1
        if text:
            batch = [{**c, "click_time": _fmt(c["click_time"])} for c in batch]
        url = f"{kserve.base}/v2/models/attribution/infer"
        if n_batches[0] % 3 == 0:
            body, headers = framed(*v2_binary(batch, text)[:2])
            r = s.post(url, data=body, headers=headers, timeout=60)
        else:
            r = s.post(url, json=v2_body(batch, text), timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] and body["model_name"] == "attribution"
        (out,) = body["outputs"]
        assert out["name"] == "probability" and out["datatype"] == "FP64" and out["shape"] == [len(batch)]
        return out["data"]

    got = replay(post, click_dicts(ordered, shift=7 * DAY, text_time=False))
    np.testing.assert_allclose(got, expected_sample_probabilities[ordered["row_id"].to_numpy()], rtol=0, atol=1e-6)


def _fmt(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def test_flask_replay_matches_batch_scoring(flask_server, ordered, expected_sample_probabilities):
    """/predict and the seed's /talkingdata-api route on alternate batches."""
    s = requests.Session()
    n_batches = [0]

    def post(batch):
        route, field = ("/predict", "clicks") if n_batches[0] % 2 == 0 else ("/talkingdata-api", "attrPredictRequest")
        n_batches[0] += 1
        r = s.post(flask_server.base + route, json={field: batch}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["probabilities"]

    got = replay(post, click_dicts(ordered))
    np.testing.assert_allclose(got, expected_sample_probabilities[ordered["row_id"].to_numpy()], rtol=0, atol=1e-6)


# ---- hand-picked bad requests ------------------------------------------------------------------------------
def _with(**changes):
    c = {**GOOD, **changes}
    return {k: v for k, v in c.items() if v is not _DROP}


_DROP = object()
BAD_CLICKS = [
    (_with(app=_DROP), "'app': missing required field"),
    (_with(referrer="x"), "'referrer': unknown field"),
    (_with(ip=-3), "'ip': negative id"),
    (_with(ip=2**40), "'ip': id larger than"),
    (_with(os=2**70), "'os': "),  # orjson (KServe) reads it as a float: 'got number'; json: not an integer
    (_with(channel=1.5), "'channel': expected a non-negative integer, got number"),
    (_with(device=True), "'device': expected a non-negative integer, got boolean"),
    (_with(app=None), "'app': expected a non-negative integer, got null"),
    (_with(app="abc"), "'app': not a non-negative integer"),
    (_with(click_time="2017-11-32 10:00:00"), "'click_time': unparseable time"),
    (_with(click_time="yesterday"), "'click_time': unparseable time"),
    (_with(click_time=-5), "'click_time': epoch seconds out of range"),
    (_with(click_time="2999-01-01 00:00:00"), "more than a day in the future"),
    (_with(click_id="retry-7"), "'click_id': not a non-negative integer"),
    ({**GOOD, "\udc6a": 1}, ""),  # a lone surrogate (found by the fuzz): orjson refuses it, json reads it
]


def _kserve_cases():
    url = "/v1/models/attribution:predict"
    cases = [(url, json.dumps({"instances": [GOOD, GOOD, bad]}), JSON, 400, why) for bad, why in BAD_CLICKS]
    cases += [
        (url, '{"instances": [', JSON, 400, "Unrecognized request format"),
        (url, json.dumps({"instances": []}), JSON, 400, "empty batch"),
        (url, json.dumps({"instances": [GOOD] * (MAX_BATCH + 1)}), JSON, 400, f"exceeds the limit of {MAX_BATCH}"),
        (url, json.dumps({"instances": GOOD}), JSON, 400, "instances"),
        (url, json.dumps({"clicks": [GOOD]}), JSON, 400, "unknown top-level field 'clicks'"),
        (url, json.dumps([GOOD]), JSON, 400, "expected a JSON object"),
        (url, json.dumps({"instances": [GOOD]}), {"Content-Type": "text/plain"}, 400, "application/json"),
        ("/v2/models/attribution/infer", json.dumps({"inputs": v2_body([GOOD], True)["inputs"][:5]}), JSON, 400,
         "'click_time': missing input tensor"),
        ("/v2/models/attribution/infer",
         json.dumps({"inputs": [{**i, "datatype": "FP32"} if i["name"] == "ip" else i for i in v2_body([GOOD], True)["inputs"]]}),
         JSON, 400, "datatype FP32 not accepted"),
        ("/v2/models/attribution/infer", json.dumps({"inputs": v2_body([GOOD, GOOD], True)["inputs"][:5]
                                                     + [{"name": "click_time", "shape": [1], "datatype": "BYTES", "data": ["2017-11-20 10:00:00"]}]}),
         JSON, 400, "differ in length"),
        ("/v2/models/attribution/infer", '{"inputs": [}', JSON, 422, ""),
        (url, "x" * (max_body_bytes(MAX_BATCH) + 1), JSON, 413, f"exceeds the limit of {max_body_bytes(MAX_BATCH)} bytes"),
        ("/v2/models/attribution/infer", json.dumps(v2_body([{**GOOD, "click_time": "2017-11-20 10:00:0\ud800"}], True)),
         JSON, 400, "field 'click_time': text is not valid Unicode"),
        ("/v2/models/attribution/infer", json.dumps({"inputs": [{**i, "data": [1.0]} if i["name"] == "os" else i
                                                               for i in v2_body([GOOD], True)["inputs"]]}),
         JSON, 400, "field 'os': INT64 element must be an integer, got float"),
        ("/v2/models/attribution/infer",  # pydantic reads lone surrogates; the message must still render
         json.dumps({"inputs": v2_body([GOOD], True)["inputs"] + [{"name": "\udc6a", "shape": [1], "datatype": "INT64", "data": [1]}]}),
         JSON, 400, "unknown input"),
    ]
    return cases


def _flask_cases():
    cases = [("/predict", json.dumps({"clicks": [GOOD, bad]}), JSON, 400, why) for bad, why in BAD_CLICKS]
    cases += [
        ("/predict", '{"clicks": [', JSON, 400, "malformed JSON"),
        ("/predict", "[" * 100_000, JSON, 400, "malformed JSON"),
        ("/predict", json.dumps({"clicks": []}), JSON, 400, "empty batch"),
        ("/predict", json.dumps({"clicks": [GOOD] * (MAX_BATCH + 1)}), JSON, 400, f"exceeds the limit of {MAX_BATCH}"),
        ("/predict", json.dumps({"instances": [GOOD]}), JSON, 400, "single field \"clicks\""),
        ("/talkingdata-api", json.dumps({"clicks": [GOOD]}), JSON, 400, "attrPredictRequest"),
        ("/predict", json.dumps({"clicks": [GOOD]}), {"Content-Type": "text/plain"}, 415, "application/json"),
        ("/predict", "x" * (max_body_bytes(MAX_BATCH) + 1), JSON, 413, f"exceeds the limit of {max_body_bytes(MAX_BATCH)} bytes"),
        ("/predict", json.dumps({"clicks": [{**GOOD, "click_time": "2017-11-20 10:00:0\ud800"}]}), JSON, 400,
         "field 'click_time': text is not valid Unicode"),
        ("/predict", json.dumps({"clicks": [{**GOOD, "app": "1\udc00"}]}), JSON, 400, "field 'app': text is not valid Unicode"),
    ]
    return cases


def _state(srv) -> tuple[float, float]:
    time.sleep(2.2)  # the state gauges are a snapshot taken every 2 s (serving.guard.StateWatch)
    text = requests.get(srv.base + "/metrics", timeout=10).text
    return metric(text, "attribution_clicks_scored_total"), metric(text, "attribution_state_events")


@pytest.mark.parametrize("server", ["kserve", "flask_server"])
def test_bad_requests_get_4xx_naming_the_problem_and_leave_state_alone(server, request):
    srv = request.getfixturevalue(server)
    before = _state(srv)
    s = requests.Session()
    for path, body, headers, status, why in _kserve_cases() if server == "kserve" else _flask_cases():
        r = s.post(srv.base + path, data=body.encode(), headers=headers, timeout=30)
        assert r.status_code == status, (path, body[:200], r.status_code, r.text[:300])
        err = r.json()  # every refusal is a JSON body saying why, with the request's id
        assert why in (err.get("error") or json.dumps(err)), (path, body[:200], r.text[:300])
        assert err["request_id"] == r.headers["X-Request-ID"] and len(err["request_id"]) >= 16
    assert _state(srv) == before, "a rejected request changed the state"
    text = requests.get(srv.base + "/metrics", timeout=10).text
    assert metric(text, "attribution_bad_requests_total") >= len(BAD_CLICKS)


# ---- fuzz --------------------------------------------------------------------------------------------------
NO_DIGITS = st.text(st.one_of(st.characters(blacklist_categories=("Nd",), blacklist_characters="\x00"),
                              st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])), max_size=12)  # lone surrogates too
NOT_JSON_SCALAR = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(),
                            st.lists(st.integers(0, 9), max_size=3), st.dictionaries(NO_DIGITS, st.integers(), max_size=2))


def bad_id(limit: int):
    return st.one_of(st.integers(max_value=-1), st.integers(min_value=limit + 1, max_value=2**80), NO_DIGITS,
                     NOT_JSON_SCALAR)


BAD_TIME = st.one_of(
    NO_DIGITS, st.integers(max_value=-1), st.integers(min_value=4_102_444_800, max_value=2**70), NOT_JSON_SCALAR,
    st.sampled_from(["2017-11-06", "2017-11-06T16:00:00Z", "2017-11-06 25:00:00",
                     "06/11/2017 16:00:00", "2017-11-06 16:00", "3017-11-06 16:00:00"]),
)
BAD_VALUE = {f: bad_id(limit) for f, limit in ID_LIMITS.items()}
BAD_VALUE["click_time"] = BAD_TIME
BAD_VALUE["click_id"] = st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64), NO_DIGITS.filter(bool),
                                  st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=2))


@st.composite
def bad_click(draw) -> dict:
    c = dict(GOOD)
    kind = draw(st.sampled_from(["value", "value", "value", "missing", "extra"]))
    if kind == "value":
        f = draw(st.sampled_from(sorted(BAD_VALUE)))
        c[f] = draw(BAD_VALUE[f])
    elif kind == "missing":
        del c[draw(st.sampled_from(sorted(GOOD)))]
    else:
        c[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in BAD_VALUE))] = draw(st.integers())
    return c


@st.composite
def bad_request(draw, field: str) -> tuple[bytes, str]:
    """(body, content type); every one is wrong somewhere, so none may be scored."""
    kind = draw(st.sampled_from(["click"] * 6 + ["envelope", "bytes", "truncated", "ctype", "notlist"]))
    if kind == "click":
        n_before, n_after = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        clicks = [GOOD] * n_before + [draw(bad_click())] + [GOOD] * n_after
        return json.dumps({field: clicks}).encode(), "application/json"
    if kind == "envelope":
        body = draw(st.one_of(st.just({}), st.just({field: []}), st.just({field: [GOOD], "extra": 1}),
                              st.dictionaries(NO_DIGITS.filter(lambda k: k != field), st.integers(), min_size=1, max_size=3)))
        return json.dumps(body).encode(), "application/json"
    if kind == "notlist":
        return json.dumps({field: draw(st.one_of(st.integers(), NO_DIGITS, st.just(GOOD)))}).encode(), "application/json"
    if kind == "bytes":
        return draw(st.binary(max_size=64)), "application/json"
    if kind == "truncated":
        body = json.dumps({field: [GOOD, GOOD]})
        return body[: draw(st.integers(0, len(body) - 1))].encode(), "application/json"
    return json.dumps({field: [GOOD]}).encode(), draw(st.sampled_from(["text/plain", "application/xml"]))


@st.composite
def bad_v2(draw) -> tuple[bytes, str]:
    inputs = v2_body([GOOD, GOOD], True)["inputs"]
    kind = draw(st.sampled_from(["datatype", "drop", "unknown", "shape", "value", "bytes"]))
    i = draw(st.integers(0, len(inputs) - 1))
    if kind == "datatype":
        inputs[i]["datatype"] = draw(st.sampled_from(["FP32", "FP64", "BOOL"] + (["BYTES"] if i < 5 else [])))
    elif kind == "drop":
        del inputs[i]
    elif kind == "unknown":
        inputs.append({"name": draw(NO_DIGITS.filter(lambda k: k not in BAD_VALUE)), "shape": [2], "datatype": "INT64", "data": [1, 2]})
    elif kind == "shape":
        inputs[i]["shape"] = draw(st.sampled_from([[3], [1], [2, 2], [1, 2], [-2]]))
    elif kind == "value":
        f = inputs[i]["name"]
        inputs[i]["data"][draw(st.integers(0, 1))] = draw(BAD_VALUE[f] if f != "click_time" else st.one_of(NO_DIGITS, st.booleans()))
    else:
        return draw(st.binary(max_size=48)), "application/json"
    return json.dumps({"inputs": inputs}).encode(), "application/json"


GOOD_EPOCH = {**GOOD, "click_time": 1_511_172_000}
NOT_SIZE = st.one_of(st.integers(max_value=-1), st.floats(allow_nan=False), st.booleans(), NO_DIGITS,
                     st.integers(min_value=2**31, max_value=2**70), st.lists(st.integers(0, 9), max_size=2))


@st.composite
def bad_v2_binary(draw) -> tuple[bytes, str, dict]:
    """Binary-extension bodies (JSON header + raw tensors), each wrong in its framing, its header or a value."""
    text = draw(st.booleans())
    head, raws, _ = v2_binary([GOOD, GOOD] if text else [GOOD_EPOCH, GOOD_EPOCH], text)
    inputs = head["inputs"]
    i = draw(st.integers(0, len(inputs) - 1))
    kind = draw(st.sampled_from(["length", "size", "size", "shape", "datatype", "truncate", "trailing", "head",
                                 "input", "value", "value", "bytes_prefix", "drop_size"]))
    length: int | str | None = None
    if kind == "length":
        js = len(json.dumps(head))
        token = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8)  # what HTTP carries
        length = draw(st.one_of(st.sampled_from(["", "-1", "1e3", "12 ", "0x10", "+5"]), token.filter(lambda v: not v.isdigit()),
                                st.integers(js + 1, js + 200), st.integers(0, js - 1), st.just(10**30)))
    elif kind == "size":
        inputs[i]["parameters"]["binary_data_size"] = draw(st.one_of(
            NOT_SIZE, st.integers(0, 64).filter(lambda v: v != len(raws[i]))))
    elif kind == "drop_size":
        inputs[i]["parameters"] = draw(st.sampled_from([{}, None, [], "binary", 3]))
    elif kind == "shape":
        inputs[i]["shape"] = draw(st.sampled_from([[3], [1], [2, 2], [1, 2], [-2], ["2"], "2", None, [], [10**12]]))
    elif kind == "datatype":
        inputs[i]["datatype"] = draw(st.sampled_from(["FP32", "FP64", "BOOL", "INT8", "INT32", "UINT16", "FOO", 7, None]
                                                     + (["BYTES"] if i < 5 else [])))
    elif kind == "truncate":
        raws[-1] = raws[-1][: draw(st.integers(0, len(raws[-1]) - 1))]
    elif kind == "trailing":
        raws.append(draw(st.binary(min_size=1, max_size=16)))
    elif kind == "head":
        bad = draw(st.one_of(st.just([1]), st.just(7), st.just({}), st.just({"inputs": []}), st.just({"inputs": {}}),
                             st.just({"inputs": inputs, "outputs": [{"x": 1}]}), st.just({"inputs": inputs, "outputs": 3}),
                             st.just({"inputs": inputs, "id": 5}), st.just({"inputs": inputs, "parameters": [1]})))
        body, headers = framed(bad, raws)
        return body, headers.pop("Content-Type"), headers
    elif kind == "input":
        inputs[i] = draw(st.sampled_from([1, "x", None, [], {"name": 3, "shape": [2], "datatype": "INT64"},
                                          {"shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}},
                                          {**inputs[i], "parameters": [16]}, {**inputs[i], "name": "\ud800"}]))
    elif kind == "value":
        field = inputs[i]["name"]
        if field == "click_time" and text:
            t = draw(st.one_of(st.binary(max_size=24).filter(lambda b: not b.startswith(b"2017-11-20")),
                               st.sampled_from([b"\xff\xfe", b"2017-13-01 00:00:00", b"\xed\xa0\x80"])))
            raws[i] = raws[i][: 4 + 19] + struct.pack("<I", len(t)) + t
            inputs[i]["parameters"]["binary_data_size"] = len(raws[i])
        else:
            limit = ID_LIMITS.get(field, 2**40)
            v = draw(st.one_of(st.integers(-(2**63), -1), st.integers(limit + 1, 2**63 - 1)))
            raws[i] = raws[i][:8] + struct.pack("<q", v)
    else:  # bytes_prefix: a BYTES element whose length prefix runs past its tensor
        inputs[-1]["datatype"] = "BYTES"
        raws[-1] = struct.pack("<I", draw(st.integers(len(raws[-1]), 2**32 - 1))) + raws[-1][4:]
        inputs[-1]["parameters"]["binary_data_size"] = len(raws[-1])
        inputs[-1]["shape"] = [2]
    body, headers = framed(head, raws, length)
    return body, headers.pop("Content-Type"), headers


def _fuzz(srv, routes: list[tuple[str, object]], examples: int) -> None:
    before = _state(srv)
    s = requests.Session()
    sent = {"n": 0}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        path, strategy = data.draw(st.sampled_from(routes))
        body, ctype, *extra = data.draw(strategy)  # binary-extension bodies come with their own headers
        r = s.post(srv.base + path, data=body, headers={"Content-Type": ctype, **(extra[0] if extra else {})}, timeout=30)
        sent["n"] += 1
        assert 400 <= r.status_code < 500, (path, body[:300], r.status_code, r.text[:300])

    check()
    assert sent["n"] >= examples
    assert _state(srv) == before, "a malformed request changed the state"
    assert requests.get(srv.base + srv.ready_path, timeout=10).status_code == 200


@pytest.mark.slow
def test_kserve_fuzz_never_5xx(kserve):
    _fuzz(kserve, [("/v1/models/attribution:predict", bad_request("instances")),
                   ("/v2/models/attribution/infer", bad_v2()), ("/v2/models/attribution/infer", bad_v2_binary())], 3000)
    r = requests.post(f"{kserve.base}/v1/models/attribution:predict", json={"instances": [GOOD]}, timeout=30)
    assert r.status_code == 200 and 0 <= r.json()["predictions"][0] <= 1


@pytest.mark.slow
def test_flask_fuzz_never_5xx(flask_server):
    _fuzz(flask_server, [("/predict", bad_request("clicks")), ("/talkingdata-api", bad_request("attrPredictRequest"))], 2000)
    r = requests.post(f"{flask_server.base}/predict", json={"clicks": [GOOD]}, timeout=30)
    assert r.status_code == 200 and 0 <= r.json()["probabilities"][0] <= 1


def test_flask_openapi_and_metrics(flask_server):
    doc = requests.get(flask_server.base + "/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.") and {"/predict", "/talkingdata-api", "/healthz"} <= set(doc["paths"])
    assert doc["components"]["schemas"]["Click"]["properties"]["ip"]["oneOf"][0]["maximum"] == ID_LIMITS["ip"]
    text = requests.get(flask_server.base + "/metrics", timeout=10).text
    assert metric(text, "attribution_clicks_scored_total") > 0
    assert "attribution_http_request_seconds_bucket" in text


def test_kserve_metrics(kserve):
    text = requests.get(kserve.base + "/metrics", timeout=10).text
    assert metric(text, "attribution_clicks_scored_total") > 0
    assert metric(text, "attribution_state_events") > 0
    assert "request_predict_seconds" in text  # KServe's own latency histogram
