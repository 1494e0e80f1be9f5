"""The deploy gate: the candidate and the deployed model scored on the same holdout rows; a worse model is not
deployed, a better one is rolled out as a canary and promoted when its revision is Ready, rolled back when
it is not; "nothing live" (no InferenceService, or a URI without a model) falls back to the thresholds.
What it sends the API is stored by a recording API that applies merge patches and validates the result
against the KServe CRD."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kube_recorder import RecordingCustomObjects, signature_problems
from manifest_checks import container_policy_problems, crd_problems

from attribution import storage
from attribution.evaluation.compare import Holdout
from attribution.model.bundle import ModelLoadError
from attribution.platform import deploy
from attribution.platform.spark_submit import manifests_root

PLURAL = deploy.PLURAL


def scorer(table: dict[str, dict], rows: int = 1000):
    """A score(model_uri) over fixed numbers; a URI not in the table is 'nothing there'."""
    def score(uri: str) -> dict:
        if uri not in table:
            raise FileNotFoundError(uri)
        return {"holdout_rows": rows, **table[uri]}
    return score


class Controller:
    """Plays KServe: a new generation becomes Ready (or fails) after `after` status polls."""

    def __init__(self, ready: bool = True, after: int = 2):
        self.ready, self.after, self.polls = ready, after, 0

    def on_get(self, obj: dict) -> None:
        gen = obj["metadata"]["generation"]
        status = obj.setdefault("status", {})
        if status.get("observedGeneration") == gen:
            return
        self.polls += 1
        if self.polls < self.after:
            return
        self.polls = 0
        status["observedGeneration"] = gen
        rev = f"attribution-predictor-{gen:05d}"
        if self.ready:
            status["conditions"] = [{"type": "Ready", "status": "True"}]
            status["components"] = {"predictor": {"latestCreatedRevision": rev, "latestReadyRevision": rev}}
        else:
            status["conditions"] = [{"type": "Ready", "status": "False", "reason": "RevisionFailed"}]
            prev = status.get("components", {}).get("predictor", {}).get("latestReadyRevision")
            status["components"] = {"predictor": {"latestCreatedRevision": rev, "latestReadyRevision": prev}}


def recording_api(controller: Controller | None = None) -> RecordingCustomObjects:
    api = RecordingCustomObjects()
    api.on_get = controller.on_get if controller else None
    return api


def fake_time():
    now = [0.0]
    return (lambda s: now.__setitem__(0, now[0] + s)), (lambda: now[0])


def gate(api, model_uri: str, score, deployed_model_uri: str = "", **kw) -> deploy.Decision:
    sleep, clock = fake_time()
    return deploy.deploy_gate(model_uri, score, deployed_model_uri, 0.9, 0.1, target="kubernetes", api=api,
                              poll_s=5, sleep=sleep, clock=clock, **kw)


def test_the_recording_api_has_the_real_signatures():
    assert signature_problems(RecordingCustomObjects()) == []


# ---- deciding ---------------------------------------------------------------------------------------------------
def test_worse_model_is_not_deployed(tmp_path):
    score = scorer({"gs://m/old": {"roc_auc": 0.95, "pr_auc": 0.30}, "gs://m/new": {"roc_auc": 0.96, "pr_auc": 0.25}})
    d = deploy.deploy_gate("gs://m/new", score, "gs://m/old", 0.9, 0.1, target="manifest", output_dir=tmp_path / "out")
    assert not d.deployed
    assert any("pr_auc 0.2500 is worse than the deployed model's 0.3000 on the same rows" in r for r in d.reasons)
    assert not (tmp_path / "out" / "inferenceservice.yaml").exists()
    record = json.loads((tmp_path / "out" / "decision.json").read_text())
    assert record["deployed"] is False
    assert record["candidate"] == {"roc_auc": 0.96, "pr_auc": 0.25, "holdout_rows": 1000}
    assert record["deployed_metrics"] == {"roc_auc": 0.95, "pr_auc": 0.30, "holdout_rows": 1000}


def test_below_threshold_is_not_deployed(tmp_path):
    d = deploy.deploy_gate("gs://m/new", scorer({"gs://m/new": {"roc_auc": 0.85, "pr_auc": 0.5}}), "", 0.9, 0.1,
                           target="manifest", output_dir=tmp_path)
    assert not d.deployed and any("below the threshold 0.9000" in r for r in d.reasons)


def test_scores_on_different_rows_are_refused():
    def score(uri: str) -> dict:
        return {"roc_auc": 0.97, "pr_auc": 0.3, "holdout_rows": 10 if uri.endswith("new") else 11}
    with pytest.raises(ValueError, match="same rows"):
        deploy.deploy_gate("gs://m/new", score, "gs://m/old", 0.9, 0.1, target="manifest", output_dir=None)


@pytest.mark.parametrize("error", [FileNotFoundError("gs://m/live/model.json"),
                                   ModelLoadError("model directory gs://m/live does not exist")])
def test_nothing_live_falls_back_to_the_thresholds(tmp_path, error):
    def score(uri: str) -> dict:
        if uri == "gs://m/live":
            raise error
        return {"roc_auc": 0.97, "pr_auc": 0.3, "holdout_rows": 5}
    d = deploy.deploy_gate("gs://m/new", score, "gs://m/live", 0.9, 0.1, target="manifest", output_dir=tmp_path)
    assert d.deployed and d.deployed_metrics is None
    assert "gs://m/live" in d.reasons[-1] and "thresholds only" in d.reasons[-1]


def test_a_score_failure_other_than_a_missing_model_is_not_swallowed():
    def score(uri: str) -> dict:
        if uri == "gs://m/live":
            raise PermissionError("403 on gs://m/live")
        return {"roc_auc": 0.97, "pr_auc": 0.3, "holdout_rows": 5}
    with pytest.raises(PermissionError):
        deploy.deploy_gate("gs://m/new", score, "gs://m/live", 0.9, 0.1, target="manifest")


def test_same_model_is_not_redeployed(tmp_path):
    score = scorer({"gs://m/same": {"roc_auc": 0.95, "pr_auc": 0.3}})
    d = deploy.deploy_gate("gs://m/same", score, "gs://m/same/", 0.9, 0.1, target="manifest", output_dir=tmp_path)
    assert not d.deployed and "already deployed" in d.reasons[-1]


def test_manifest_target_writes_a_valid_inference_service(tmp_path):
    score = scorer({"gs://attribution-models/attribution/run-8": {"roc_auc": 0.97, "pr_auc": 0.31}})
    d = deploy.deploy_gate("gs://attribution-models/attribution/run-8", score, "", 0.9, 0.1, target="manifest",
                           output_dir=tmp_path / "out")
    assert d.deployed and d.action == "wrote manifest", d.reasons
    doc = yaml.safe_load(Path(d.manifest_path).read_text())
    # the pod KServe makes of it runs the ServingRuntime's container: checked together
    runtime = yaml.safe_load((manifests_root() / "base" / "serving" / "servingruntime.yaml").read_text())
    assert crd_problems([doc, runtime]) == [] and container_policy_problems([doc, runtime]) == []
    assert deploy.storage_uri_of(doc) == "gs://attribution-models/attribution/run-8"


def test_crd_validation_is_strict():
    doc = deploy.render_inference_service("gs://m/x")
    doc["spec"]["predictor"]["bogusField"] = 1
    assert any("bogusField" in p for p in crd_problems([doc]))


def test_decide_reports_missing_metrics():
    ok, reasons = deploy.decide({"roc_auc": float("nan")}, None, 0.5, 0.1)
    assert not ok and "roc_auc is missing" in reasons[0]
    with pytest.raises(ValueError):
        deploy.deploy_gate("x", scorer({"x": {"roc_auc": 1, "pr_auc": 1}}), "", 0, 0, target="helm")


# ---- rolling out ------------------------------------------------------------------------------------------------
GOOD = {"roc_auc": 0.97, "pr_auc": 0.31}


def test_first_rollout_creates_and_waits_for_ready():
    api = recording_api(Controller(ready=True, after=3))
    d = gate(api, "gs://m/run-9", scorer({"gs://m/run-9": GOOD}))
    assert d.deployed and d.action == "created" and d.deployed_model_uri is None
    assert "nothing live" in d.reasons[-1]
    gets = [c for c in api.calls if c[0] == "get"]
    assert len(gets) >= 4  # the live lookup, then polls until the first revision is Ready
    assert deploy.storage_uri_of(api.objects[(PLURAL, "attribution", "attribution")]) == "gs://m/run-9"


def test_first_rollout_that_never_gets_ready_is_reported_not_deployed():
    api = recording_api(Controller(ready=True, after=10**6))
    d = gate(api, "gs://m/run-9", scorer({"gs://m/run-9": GOOD}), ready_timeout_s=60)
    assert not d.deployed and d.action == "created, timed out"


def live_api(controller: Controller, live_uri: str) -> RecordingCustomObjects:
    api = recording_api(controller)
    doc = deploy.render_inference_service(live_uri)
    doc["spec"]["predictor"]["minReplicas"] = 3  # an overlay's value, which the gate must keep
    api.create_namespaced_custom_object(deploy.GROUP, deploy.VERSION, "attribution", PLURAL, doc)
    api.calls.clear()
    return api


def test_canary_is_promoted_when_its_revision_is_ready():
    api = live_api(Controller(ready=True), "gs://m/run-9")
    score = scorer({"gs://m/run-9": {"roc_auc": 0.96, "pr_auc": 0.30}, "gs://m/run-10": {"roc_auc": 0.98, "pr_auc": 0.35}})
    d = gate(api, "gs://m/run-10", score, canary_percent=25)
    assert d.deployed and d.action == "promoted" and d.deployed_model_uri == "gs://m/run-9", d.rollout
    patches = [c[4] for c in api.calls if c[0] == "patch"]
    assert patches[0]["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert patches[0]["metadata"]["resourceVersion"]  # a concurrent change fails instead of being overwritten
    assert patches[1] == {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    live = api.objects[(PLURAL, "attribution", "attribution")]
    assert deploy.storage_uri_of(live) == "gs://m/run-10" and "canaryTrafficPercent" not in live["spec"]["predictor"]
    assert live["spec"]["predictor"]["minReplicas"] == 3  # the overlay's value kept
    assert all(set(p["spec"]["predictor"]) <= {"model", "canaryTrafficPercent"} for p in patches)
    assert patches[0]["spec"]["predictor"]["model"] == {"storageUri": "gs://m/run-10"}  # one scalar
    # the promotion waited for the canary's own generation, not the old one
    idx_promote = next(i for i, c in enumerate(api.calls) if c[0] == "patch" and c[4] == patches[1])
    assert any(c[0] == "get" for c in api.calls[1:idx_promote])


def test_canary_that_fails_is_rolled_back_to_the_previous_uri():
    api = live_api(Controller(ready=False), "gs://m/run-9")
    score = scorer({"gs://m/run-9": {"roc_auc": 0.96, "pr_auc": 0.30}, "gs://m/run-10": {"roc_auc": 0.98, "pr_auc": 0.35}})
    d = gate(api, "gs://m/run-10", score)
    assert not d.deployed and d.action == "rolled back" and "canary revision failed" in d.rollout
    live = api.objects[(PLURAL, "attribution", "attribution")]
    assert deploy.storage_uri_of(live) == "gs://m/run-9"
    assert live["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert live["metadata"]["annotations"][deploy.ANNOTATION] == "gs://m/run-9"


def test_canary_percent_out_of_range_is_refused():
    api = live_api(Controller(), "gs://m/run-9")
    score = scorer({"gs://m/run-9": {"roc_auc": 0.9, "pr_auc": 0.3}, "gs://m/run-10": GOOD})
    with pytest.raises(ValueError, match="canary_percent"):
        gate(api, "gs://m/run-10", score, canary_percent=0)


def test_the_uri_has_one_home_the_model_spec():
    # spec.predictor.model.storageUri is a scalar no kustomization sets: a patch touches only it, and git
    # (the template) never sets it; a predictor without a model section is refused, not patched into one.
    template = deploy.load_template()
    assert deploy.storage_uri_of(template) is None and "containers" not in template["spec"]["predictor"]
    doc = deploy.render_inference_service("gs://m/a")
    assert deploy.storage_uri_of(doc) == "gs://m/a" and doc["spec"]["predictor"]["model"]["runtime"] == "attribution"
    assert deploy.uri_patch(doc, "gs://m/b") == {"model": {"storageUri": "gs://m/b"}}
    custom = {"metadata": {"name": "attribution"}, "spec": {"predictor": {"containers": [{"name": "x"}]}}}
    with pytest.raises(ValueError, match="spec.predictor.model"):
        deploy.uri_patch(custom, "gs://m/b")


# ---- the same rows, with real models --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_models(tmp_path_factory, sample_path):
    """A decent model and a weak one (ids only, two rounds), both in a remote fsspec store (memory://)."""
    from attribution.training.config import TrainConfig
    from attribution.training.train import train

    fast = {"epochs": 1, "vector_size": 4}
    good = train(sample_path, "memory://models/good",
                 TrainConfig(params={"max_rounds": 30}, ablation=False, cat2vec=fast, n_threads=2))
    weak = train(sample_path, "memory://models/weak",
                 TrainConfig(params={"max_rounds": 2, "max_depth": 1}, ablation=False, use_cat2vec=False,
                             use_window_features=False, n_threads=2, valid_from=good["valid_from"]))
    return good, weak


def test_both_models_are_scored_on_the_same_rows(two_models, sample_path, tmp_path):
    good, _ = two_models
    holdout = Holdout.load(str(sample_path), good["valid_from"])
    d = deploy.deploy_gate("memory://models/weak", holdout.score, "memory://models/good", 0.5, 0.0,
                           target="manifest", output_dir=tmp_path)
    assert d.candidate["holdout_rows"] == d.deployed_metrics["holdout_rows"] == len(holdout.frame) > 0
    assert d.deployed_metrics["roc_auc"] > d.candidate["roc_auc"]
    assert not d.deployed and any("worse than the deployed model's" in r for r in d.reasons)
    back = deploy.deploy_gate("memory://models/good", holdout.score, "memory://models/weak", 0.5, 0.0,
                              target="manifest", output_dir=tmp_path / "back")
    assert back.deployed, back.reasons


def test_a_uri_without_a_model_is_nothing_live(two_models, sample_path, tmp_path):
    good, _ = two_models
    assert not storage.exists("memory://models/never-trained")
    holdout = Holdout.load(str(sample_path), good["valid_from"])
    d = deploy.deploy_gate("memory://models/good", holdout.score, "memory://models/never-trained", 0.5, 0.0,
                           target="manifest", output_dir=tmp_path)
    assert d.deployed and d.deployed_metrics is None and "never-trained" in d.reasons[-1]


def test_a_holdout_too_large_for_the_budget_is_streamed_and_scores_the_same(two_models, sample_path, tmp_path):
    """A features Parquet the budget cannot hold is never loaded whole by the gate: it is counted, then
    scored in batches, with the same rows and the same figures as the whole-file holdout."""
    from attribution.features.build import build_features_file

    good, _ = two_models
    features = tmp_path / "features.parquet"
    build_features_file(sample_path, features, engine="vectorized", progress=False)
    whole = Holdout.load(str(features), good["valid_from"], memory_budget=2**40)
    streamed = Holdout.load(str(features), good["valid_from"], memory_budget=2**20)
    assert whole.frame is not None and streamed.frame is None
    a, b = whole.score("memory://models/good"), streamed.score("memory://models/good")
    assert a["holdout_rows"] == b["holdout_rows"] == len(whole.frame) and a["positives"] == b["positives"] > 0
    for key in ("roc_auc", "pr_auc", "log_loss"):
        assert b[key] == pytest.approx(a[key], abs=1e-9)
    with pytest.raises(ValueError, match="do not hold both classes"):
        Holdout.load(str(features), "2100-01-01 00:00:00", memory_budget=2**20)


def test_the_candidate_is_not_scored_again_when_the_evaluation_covers_the_same_rows(two_models, sample_path):
    """The gate takes the evaluation step's figures for the candidate only when they are on exactly the
    holdout's rows (start, rows, positives); any other model, or a mismatch, is scored."""
    good, _ = two_models
    holdout = Holdout.load(str(sample_path), good["valid_from"])
    real = holdout.score("memory://models/good")
    evaluated = {"roc_auc": 0.123, "pr_auc": 0.045, "log_loss": 0.5, "rows": holdout.rows,
                 "positives": holdout.positives, "from_ts": holdout.from_ts}
    score = holdout.scorer(evaluated, "memory://models/good")
    reused = score("memory://models/good")
    assert reused["roc_auc"] == 0.123 and reused["holdout_rows"] == real["holdout_rows"] == len(holdout.frame)
    assert score("memory://models/weak")["roc_auc"] == pytest.approx(holdout.score("memory://models/weak")["roc_auc"])
    for mismatch in ({"rows": holdout.rows - 1}, {"positives": holdout.positives + 1}, {"from_ts": "2017-11-06 00:00:00"},
                     {"roc_auc": float("nan")}):
        again = holdout.scorer({**evaluated, **mismatch}, "memory://models/good")("memory://models/good")
        assert again["roc_auc"] == pytest.approx(real["roc_auc"])
