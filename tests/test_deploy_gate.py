"""The deploy gate: a worse model is not deployed, a better one is; the InferenceService it applies is
strictly valid against the KServe CRD, and an existing one only gets its STORAGE_URI changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from manifest_checks import container_policy_problems, crd_problems

from attribution.platform import deploy

DEPLOYED = {"roc_auc": 0.95, "pr_auc": 0.30}


def model_dir(tmp: Path, name: str, metrics: dict) -> Path:
    d = tmp / name
    d.mkdir()
    (d / "metadata.json").write_text(json.dumps({"holdout_metrics": metrics}))
    return d


class FakeApi:
    """CustomObjectsApi stand-in recording calls."""

    def __init__(self, live: dict | None = None):
        self.live, self.calls = live, []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", namespace, name))
        if self.live is None:
            raise ApiException(status=404, reason="Not Found")
        return self.live

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(("create", namespace, body))
        return body

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.calls.append(("patch", namespace, name, body))
        return body


def test_worse_model_is_not_deployed(tmp_path):
    old = model_dir(tmp_path, "old", DEPLOYED)
    d = deploy.deploy_gate({"roc_auc": 0.96, "pr_auc": 0.25}, str(tmp_path / "new"), str(old), 0.9, 0.1,
                           target="manifest", output_dir=tmp_path / "out")
    assert not d.deployed
    assert any("pr_auc 0.2500 is worse than the deployed model's 0.3000" in r for r in d.reasons)
    assert not (tmp_path / "out" / "inferenceservice.yaml").exists()
    assert json.loads((tmp_path / "out" / "decision.json").read_text())["deployed"] is False


def test_below_threshold_is_not_deployed(tmp_path):
    d = deploy.deploy_gate({"roc_auc": 0.85, "pr_auc": 0.5}, "gs://m/new", "", 0.9, 0.1, target="manifest",
                           output_dir=tmp_path)
    assert not d.deployed and any("below the threshold 0.9000" in r for r in d.reasons)


def test_better_model_is_deployed_with_a_valid_inference_service(tmp_path):
    old = model_dir(tmp_path, "old", DEPLOYED)
    d = deploy.deploy_gate({"roc_auc": 0.97, "pr_auc": 0.31}, "gs://attribution-models/attribution/run-8",
                           str(old), 0.9, 0.1, target="manifest", output_dir=tmp_path / "out")
    assert d.deployed and d.action == "wrote manifest", d.reasons
    doc = yaml.safe_load(Path(d.manifest_path).read_text())
    assert crd_problems([doc]) == []
    assert container_policy_problems([doc]) == []
    env = doc["spec"]["predictor"]["containers"][0]["env"][0]
    assert env == {"name": "STORAGE_URI", "value": "gs://attribution-models/attribution/run-8"}
    assert doc["metadata"]["namespace"] == "attribution"


def test_crd_validation_is_strict():
    doc = deploy.render_inference_service("gs://m/x")
    doc["spec"]["predictor"]["bogusField"] = 1
    assert any("bogusField" in p for p in crd_problems([doc]))


def test_cluster_create_when_missing_and_patch_when_live(tmp_path):
    api = FakeApi(live=None)
    d = deploy.deploy_gate({"roc_auc": 0.97, "pr_auc": 0.31}, "gs://m/run-9", "", 0.9, 0.1, target="kubernetes",
                           api=api)
    assert d.deployed and d.action == "created"
    created = next(c for c in api.calls if c[0] == "create")[2]
    assert crd_problems([created]) == []

    live = deploy.render_inference_service("gs://m/run-9")
    live["metadata"]["resourceVersion"] = "42"
    live["spec"]["predictor"]["containers"][0]["image"] = "overlay-image@sha256:" + "0" * 64
    old = model_dir(tmp_path, "run-9", {"roc_auc": 0.97, "pr_auc": 0.31})
    live["spec"]["predictor"]["containers"][0]["env"][0]["value"] = str(old)
    api = FakeApi(live=live)
    d = deploy.deploy_gate({"roc_auc": 0.98, "pr_auc": 0.35}, "gs://m/run-10", "", 0.9, 0.1, target="kubernetes",
                           api=api)
    assert d.deployed and d.action == "patched" and d.deployed_model_uri == str(old)
    _, ns, name, body = next(c for c in api.calls if c[0] == "patch")
    assert (ns, name) == ("attribution", "attribution")
    assert body["metadata"]["resourceVersion"] == "42"
    container = body["spec"]["predictor"]["containers"][0]
    assert container["env"][0]["value"] == "gs://m/run-10"
    assert container["image"].startswith("overlay-image@")  # the live object's settings are kept


def test_same_model_is_not_redeployed(tmp_path):
    old = model_dir(tmp_path, "same", DEPLOYED)
    d = deploy.deploy_gate(DEPLOYED, str(old), str(old), 0.9, 0.1, target="manifest", output_dir=tmp_path / "o")
    assert not d.deployed and "already deployed" in d.reasons[-1]


def test_decide_reports_missing_metrics():
    ok, reasons = deploy.decide({"roc_auc": float("nan")}, None, 0.5, 0.1)
    assert not ok and "roc_auc is missing" in reasons[0]
    with pytest.raises(ValueError):
        deploy.deploy_gate(DEPLOYED, "x", "", 0, 0, target="helm")
