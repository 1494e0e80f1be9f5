"""The inference core and the KServe model class, in process (no HTTP): loading, validation, state, V1/V2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from kserve.errors import InvalidInput, ServerNotReady
from kserve.protocol.infer_type import InferInput, InferRequest

from attribution.features.online import MemoryStore
from attribution.features.redis_store import RedisStore
from attribution.features.spec import DEFAULT_SPEC, FeatureSpec
from attribution.inference import BadRequest, InferenceCore, parse_clicks
from attribution.model import ModelLoadError
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
        # deep in a batch, where well-formed batches take the one-comprehension-per-field path
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
    a, _ = parse_clicks([GOOD])
    b, _ = parse_clicks([{**{k: str(v) for k, v in GOOD.items() if k != "click_time"}, "click_time": 1510200000}])
    assert a.equals(b)


def test_a_null_click_id_is_a_click_without_id():
    frame, clicks = parse_clicks([GOOD, {**GOOD, "click_id": None}, {**GOOD, "click_id": 7}])
    assert [c.click_id for c in clicks] == [None, None, "7"] and len(frame) == 3


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


def test_kserve_model_v1_and_v2(serving_model_dir):
    model = AttributionModel("attribution", str(serving_model_dir))
    assert not model.ready
    model.load()
    assert model.ready
    clicks = [GOOD, {**GOOD, "click_time": "2017-11-09 04:00:07"}]
    v1 = model.predict({"instances": clicks})["predictions"]
    # the same clicks a week later (state beyond the horizon): V2 with epochs, nested [n, 1], no request id
    later = [{**c, "click_time": 1510200000 + 7 * 86400 + (7 if i else 0)} for i, c in enumerate(clicks)]
    response = model.predict(_v2(later, nested=True))
    body, _ = response.to_rest()
    assert body["id"] and body["outputs"][0]["name"] == "probability"
    np.testing.assert_allclose(body["outputs"][0]["data"], v1, rtol=0, atol=1e-12)
    assert model.predict(_v2([GOOD], request_id="r-1")).id == "r-1"


def test_kserve_model_errors(serving_model_dir):
    model = AttributionModel("attribution", str(serving_model_dir))
    model.load()
    with pytest.raises(InvalidInput, match="unknown top-level field"):
        model.predict({"instances": [GOOD], "x": 1})
    with pytest.raises(InvalidInput, match="'ip': negative id"):
        model.predict({"instances": [{**GOOD, "ip": -2}]})
    with pytest.raises(InvalidInput, match="'click_time': missing input tensor"):
        model.predict(InferRequest("attribution", _v2([GOOD]).inputs[:5]))
    bad = _v2([GOOD, GOOD])
    bad.inputs[0].data = [[1], 2]
    with pytest.raises(InvalidInput, match="flat or nested"):
        model.predict(bad)
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", DEFAULT_SPEC, connect_timeout=0.3)
    down = AttributionModel("attribution", str(serving_model_dir), core=InferenceCore(serving_model_dir, store=dead))
    with pytest.raises(ServerNotReady, match="state unavailable"):
        down.predict({"instances": [GOOD]})
    assert isinstance(InferenceCore(serving_model_dir).store, MemoryStore)
