"""The inference core and the KServe model class, in process (no HTTP): loading, validation, state, V1/V2."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest

from attribution.features.online.redis import RedisStore
from attribution.features.online.state import MemoryStore
from attribution.features.spec import DEFAULT_SPEC, FeatureSpec
from attribution.inference import BadRequest, InferenceCore, parse_clicks
from attribution.model.bundle import ModelLoadError
from serving.guard import Unavailable
from serving.model import AttributionModel
from tests.redis_fixture import click_dicts, expected_probabilities, free_port, replay_order

GOOD = {"ip": 5348, "app": 19, "device": 1, "os": 13, "channel": 213, "click_time": "2017-11-09 04:00:00"}


@pytest.fixture
def core(serving_model_dir):
    return InferenceCore(serving_model_dir, max_batch=100)


# ---- loading -------------------------------------------------------------------------------------------------
def test_refuses_a_model_trained_with_another_spec(serving_model_dir, tmp_path):
    other = tmp_path / "model"
    shutil.copytree(serving_model_dir, other)
    doc = json.loads((other / "feature_spec.json").read_text())
    d = DEFAULT_SPEC.to_dict()
    d["version"] = 2  # any change to the definition changes the hash
    spec = FeatureSpec.from_dict(d)
    doc.update(hash=spec.hash, spec=spec.to_dict())
    (other / "feature_spec.json").write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError) as err:
        InferenceCore(other)
    assert spec.hash in str(err.value) and DEFAULT_SPEC.hash in str(err.value)


def test_refuses_missing_model_and_unknown_state(serving_model_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        InferenceCore(tmp_path / "nope")
    with pytest.raises(ValueError, match="memory"):
        InferenceCore(serving_model_dir, state="postgres://x")


# ---- validation ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "instances, message",
    [
        ([], "empty batch"),
        ({"ip": 1}, "expected an array of clicks, got object"),
        ([GOOD] * 101, "exceeds the limit of 100"),
        ([GOOD, "x"], "instance 1: expected a click object"),
        ([GOOD, {**GOOD, "extra": 1}], "instance 1, field 'extra': unknown field"),
        ([{k: v for k, v in GOOD.items() if k != "os"}], "instance 0, field 'os': missing required field"),
        ([{**GOOD, "ip": -1}], "field 'ip': negative id"),
        ([{**GOOD, "app": 65536}], "field 'app': id larger than 65535"),
        ([{**GOOD, "device": 2**80}], "field 'device': not a non-negative integer"),
        ([{**GOOD, "channel": 3.0}], "field 'channel': expected a non-negative integer, got number"),
        ([{**GOOD, "click_time": "2017-11-09T04:00:00"}], "field 'click_time': unparseable time"),
        ([{**GOOD, "click_time": 2**62}], "field 'click_time': epoch seconds out of range"),
        ([{**GOOD, "click_time": [1]}], "field 'click_time': expected an integer or a time string, got array"),
        ([{**GOOD, "click_id": -4}], "field 'click_id': not a non-negative integer"),
        # deep in a batch, which the fast path (inference._fast_batch) reads column by column
        ([GOOD] * 57 + [{**GOOD, "extra": 1}] + [GOOD] * 3, "instance 57, field 'extra': unknown field"),
        ([GOOD] * 40 + [{**GOOD, "ip": True}], "instance 40, field 'ip': expected a non-negative integer, got boolean"),
        ([GOOD] * 9 + [{**GOOD, "click_id": 1.5}], "instance 9, field 'click_id': expected a non-negative integer"),
        ([GOOD] * 9 + [{**{k: v for k, v in GOOD.items() if k != "app"}, "click_id": 3}],
         "instance 9, field 'app': missing required field"),
    ],
)
def test_bad_clicks_name_instance_and_field(core, instances, message):
    before = core.stats()
    with pytest.raises(BadRequest) as err:
        core.predict(instances)
    assert message in str(err.value)
    assert core.stats() == before and core.counters.bad_requests == 1 and core.counters.clicks_scored == 0


def test_ids_as_strings_and_times_as_epochs_are_the_same_click():
    a = parse_clicks([GOOD])
    b = parse_clicks([{**{k: str(v) for k, v in GOOD.items() if k != "click_time"}, "click_time": 1510200000}])
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.t, b.t)
    assert a.ids.tolist() == [[5348, 19, 1, 13, 213]] and a.t.tolist() == [1510200000]


def test_a_null_click_id_is_a_click_without_id():
    batch = parse_clicks([GOOD, {**GOOD, "click_id": None}, {**GOOD, "click_id": 7}])
    assert batch.click_ids == [None, None, "7"] and len(batch) == 3
    assert parse_clicks([{**GOOD, "click_id": "007"}, {**GOOD, "click_id": 7}]).click_ids == ["7", "7"]


NOW = 1_700_000_000
_ids = st.one_of(st.integers(-3, 70_000), st.sampled_from([2**32 - 1, 2**32, 2**63, 2**64]), st.booleans(),
                 st.integers(0, 99).map(str), st.just(1.0), st.none())
_text_times = st.builds(  # fields at and just past their ranges: impossible dates and times are the hard cases
    lambda y, mo, d, h, mi, s, sep: f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}",
    st.sampled_from([1969, 1970, 2016, 2017, 2100]), st.sampled_from([1, 2, 11, 12, 0, 13]),
    st.sampled_from([1, 9, 28, 29, 30, 31, 0, 32]), st.sampled_from([0, 4, 23, 24]), st.sampled_from([0, 59, 60]),
    st.sampled_from([0, 59, 60]), st.sampled_from([" ", "T"]),
)
_times = st.one_of(_text_times, _text_times.map(lambda s: s[:-1]), _text_times.map(lambda s: " " + s[:-1]),
                   st.integers(-5, NOW + 2 * 86_400), st.just("2017-11-09 04:00:0\u0661"), st.just(1.5e9))


@st.composite
def _request(draw, valid: bool) -> list[dict]:
    """Well-formed clicks; unless `valid`, then up to three fields changed to doubtful values."""
    n = draw(st.integers(1, 6))
    as_text = draw(st.booleans())  # the fast path takes one form of time per request
    clicks = []
    for _ in range(n):
        c = {f: draw(st.integers(0, 60_000)) for f in ("ip", "app", "device", "os", "channel")}
        c["click_time"] = draw(st.sampled_from(["2017-11-09 04:00:00", "2016-02-29 23:59:59"]) if as_text
                               else st.integers(0, NOW))
        c.update(draw(st.sampled_from([{}, {"click_id": None}, {"click_id": 0}, {"click_id": 2**63 - 1}])))
        clicks.append(c)
    for _ in range(0 if valid else draw(st.integers(1, 3))):
        c = clicks[draw(st.integers(0, n - 1))]
        field = draw(st.sampled_from(["ip", "app", "device", "os", "channel", "click_time", "click_id", "extra", "drop"]))
        if field == "drop":
            del c[draw(st.sampled_from(sorted(c)))]
        elif field == "click_time":
            c[field] = draw(_times)
        elif field == "click_id":
            c[field] = draw(st.sampled_from([None, 7, -1, "07", 2**63, 2.0]))
        elif field == "extra":
            c[field] = 1
        else:
            c[field] = draw(_ids)
    return clicks


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_text_times, _text_times.map(lambda s: s[:-1]), _text_times.map(lambda s: " " + s[:-1]),
                          st.tuples(_text_times, st.integers(0, 18), st.characters(codec="utf-8")).map(
                              lambda v: v[0][: v[1]] + v[2] + v[0][v[1] + 1 :])), min_size=1, max_size=4))
def test_the_byte_level_time_reader_reads_exactly_what_strptime_reads(texts):
    """schema._exact_layout_times (what requests and most files take) may only answer when strptime and its
    print-back check accept every value, and must read each the same."""
    import pyarrow as pa

    from attribution.schema import _exact_layout_times, _strptime_times

    fast = _exact_layout_times(pa.array(texts))
    secs, valid = _strptime_times(pa.array(texts))
    if fast is not None:
        assert valid.all() and (fast == secs).all(), texts
    elif valid.all() and all(len(t) == 19 for t in texts):  # it may pass only on padded text strptime trims
        raise AssertionError(f"{texts!r} are valid times the byte-level reader refused")


@settings(max_examples=400, deadline=None)
@given(st.one_of(_request(valid=False), _request(valid=True)))
def test_a_request_is_accepted_exactly_when_the_file_schema_accepts_each_click(clicks):
    """One set of rules: a request passes when every click passes schema.conform (plus the request's own
    shape and live-time window), and reads the same values."""
    import pandas as pd

    from attribution.schema import ClickSchemaError, conform

    try:
        got = parse_clicks(clicks)
    except BadRequest:
        got = None
    shape_ok = all(c.keys() <= {*GOOD, "click_id"} and GOOD.keys() <= c.keys() for c in clicks) and all(
        (type(v) is int or isinstance(v, str)) for c in clicks for k, v in c.items() if not (k == "click_id" and v is None))
    ids = [c.get("click_id") for c in clicks]
    frame = pd.DataFrame([{k: (str(v) if isinstance(v, int) and k != "click_time" else v)
                           for k, v in c.items() if k != "click_id"} for c in clicks]) if shape_ok else None
    try:
        if frame is None:
            raise ClickSchemaError("request", None, "?", "shape")
        times = frame["click_time"]
        frame["click_time"] = [pd.Timestamp(v, unit="s").strftime("%Y-%m-%d %H:%M:%S") if isinstance(v, int) and 0 <= v
                               else v for v in times]
        if any(isinstance(v, int) and not 0 <= v <= _now() + 86_400 for v in times):
            raise ClickSchemaError("request", None, "click_time", "epoch out of range")
        if any(v is not None and v != "" for v in ids):
            frame["click_id"] = [str(v) if v is not None else "0" for v in ids]
        expected = conform(frame)
        t = expected["click_time"].to_numpy()
        if (t < 0).any() or (t > _now() + 86_400).any():
            raise ClickSchemaError("request", None, "click_time", "outside the live window")
    except ClickSchemaError:
        expected = None
    assert (got is None) == (expected is None), (clicks, got)
    if got is not None:
        np.testing.assert_array_equal(got.ids, expected[["ip", "app", "device", "os", "channel"]].to_numpy(np.int64))
        np.testing.assert_array_equal(got.t, expected["click_time"].to_numpy())


def _now() -> int:
    import time

    return int(time.time())


def test_impossible_dates_are_refused():
    with pytest.raises(BadRequest):
        parse_clicks([{**GOOD, "click_time": "2017-02-30 10:00:00"}])


# ---- scoring -------------------------------------------------------------------------------------------------
def test_single_clicks_and_batches_score_like_batch_scoring(serving_model_dir, sample_clicks, tmp_path_factory, sample_path):
    """The first 1,000 clicks in time order: one at a time, then (fresh state) in batches; the same
    probabilities as predict_file for clicks whose 8 h history lies inside the slice."""
    ordered = replay_order(sample_clicks).head(1000)
    clicks = click_dicts(ordered)
    one = InferenceCore(serving_model_dir)
    singles = np.concatenate([one.predict([c]) for c in clicks])
    many = InferenceCore(serving_model_dir)
    batches = np.concatenate([many.predict(clicks[i : i + 250]) for i in range(0, len(clicks), 250)])
    np.testing.assert_array_equal(singles, batches)
    expected = expected_probabilities(tmp_path_factory, serving_model_dir, sample_path)[ordered["row_id"].to_numpy()]
    np.testing.assert_allclose(singles, expected, rtol=0, atol=1e-6)  # the slice starts the file: no history lost
    assert one.counters.clicks_scored == 1000 and one.counters.requests == 1000


def test_retried_click_scores_the_same_and_is_recorded_once(core):
    first = core.predict([{**GOOD, "click_id": 17}])
    again = core.predict([{**GOOD, "click_id": "17"}])
    assert first == again
    assert core.stats().duplicate_clicks == 1 and core.stats().events == len(DEFAULT_SPEC.key_groups)


# ---- the KServe model class, as xgbserver tests its own (V1 dict and V2 InferRequest) ------------------------
def _v2(clicks: list[dict], nested: bool = False, request_id: str | None = None) -> InferRequest:
    n = len(clicks)
    inputs = []
    for f in ("ip", "app", "device", "os", "channel", "click_time"):
        data = [c[f] for c in clicks]
        dtype = "BYTES" if isinstance(data[0], str) else "INT64"
        inputs.append(InferInput(name=f, shape=[n, 1] if nested else [n], datatype=dtype,
                                 data=[[v] for v in data] if nested else data))
    return InferRequest(model_name="attribution", infer_inputs=inputs, request_id=request_id)


def predict(model: AttributionModel, payload):
    """KServe awaits `predict` on its event loop; so does this."""
    return asyncio.run(model.predict(payload))


def test_kserve_model_v1_and_v2(serving_model_dir):
    model = AttributionModel("attribution", str(serving_model_dir))
    assert not model.ready
    model.load()
    assert model.ready
    clicks = [GOOD, {**GOOD, "click_time": "2017-11-09 04:00:07"}]
    v1 = predict(model, {"instances": clicks})["predictions"]
    # the same clicks a week later (state beyond the horizon): V2 with epochs, nested [n, 1], no request id
    later = [{**c, "click_time": 1510200000 + 7 * 86400 + (7 if i else 0)} for i, c in enumerate(clicks)]
    response = predict(model, _v2(later, nested=True))
    body, _ = response.to_rest()
    assert body["id"] and body["outputs"][0]["name"] == "probability"
    np.testing.assert_allclose(body["outputs"][0]["data"], v1, rtol=0, atol=1e-12)
    assert predict(model, _v2([GOOD], request_id="r-1")).id == "r-1"


def test_kserve_model_errors(serving_model_dir):
    model = AttributionModel("attribution", str(serving_model_dir))
    model.load()
    with pytest.raises(InvalidInput, match="unknown top-level field"):
        predict(model, {"instances": [GOOD], "x": 1})
    with pytest.raises(InvalidInput, match="'ip': negative id"):
        predict(model, {"instances": [{**GOOD, "ip": -2}]})
    with pytest.raises(InvalidInput, match="'click_time': missing input tensor"):
        predict(model, InferRequest("attribution", _v2([GOOD]).inputs[:5]))
    bad = _v2([GOOD, GOOD])
    bad.inputs[0].data = [[1], 2]
    with pytest.raises(InvalidInput, match="'ip': cannot read the data as INT64 of shape"):
        predict(model, bad)
    for value, why in [(1.5, "INT64 element must be an integer, got float"), (True, "INT64 element must be an integer, got bool"),
                       (2**64, "cannot read the data as INT64")]:
        bad = _v2([GOOD, GOOD])
        bad.inputs[1].data = [19, value]
        with pytest.raises(InvalidInput, match=f"field 'app': {why}"):
            predict(model, bad)
    bad = _v2([GOOD])
    bad.inputs[5].data = ["2017-11-09 04:00:0\ud800"]
    with pytest.raises(InvalidInput, match="'click_time': text is not valid Unicode"):
        predict(model, bad)
    assert model.core.counters.clicks_scored == 0
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", DEFAULT_SPEC, connect_timeout=0.3)
    down = AttributionModel("attribution", str(serving_model_dir), core=InferenceCore(serving_model_dir, store=dead))
    with pytest.raises(Unavailable, match="state unavailable"):
        predict(down, {"instances": [GOOD]})
    assert isinstance(InferenceCore(serving_model_dir).store, MemoryStore)
