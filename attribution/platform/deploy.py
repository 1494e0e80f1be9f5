"""The deploy gate: roll the KServe InferenceService to a new model only when it is good enough.

A candidate is deployed when its holdout ROC-AUC and PR-AUC reach the thresholds and are not worse than
the currently deployed model's (its metadata.json `holdout_metrics`). Deploying means applying the
InferenceService of manifests/base/serving with STORAGE_URI set to the new model directory through the
Kubernetes API (the pipeline's service account may get/patch/create inferenceservices): an existing one
is patched in place (only its STORAGE_URI changes, so overlay settings stay), a missing one is created.
Locally the gate writes the manifest it would apply and logs that it did so.

    record = deploy_gate(candidate_metrics, "gs://b/models/run-7", deployed_model_uri="gs://b/models/run-6",
                         min_roc_auc=0.9, min_pr_auc=0.1, target="kubernetes")
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

log = logging.getLogger(__name__)
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
NAME = "attribution"
STORAGE_ENV = "STORAGE_URI"
GATED = ("roc_auc", "pr_auc")
TARGETS = ("kubernetes", "manifest")
ANNOTATION = "attribution.example.com/model-uri"


@dataclass
class Decision:
    deployed: bool
    reasons: list[str]
    candidate: dict
    baseline: dict | None
    thresholds: dict
    model_uri: str
    deployed_model_uri: str | None
    target: str
    action: str | None = None  # created / patched / wrote manifest
    manifest_path: str | None = None
    decided_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    def to_dict(self) -> dict:
        return asdict(self)


# ---- reading metrics -------------------------------------------------------------------------------------
def read_text(uri: str) -> str:
    """A small file from a local path or gs:// (google-cloud-storage, Workload Identity credentials)."""
    if uri.startswith("gs://"):
        from google.cloud import storage

        bucket, _, blob = uri[len("gs://"):].partition("/")
        return storage.Client().bucket(bucket).blob(blob).download_as_text()
    return Path(uri).read_text()


def deployed_metrics(model_uri: str) -> dict | None:
    """holdout_metrics of the model directory at model_uri (its metadata.json); None if it has none."""
    text = read_text(model_uri.rstrip("/") + "/metadata.json")
    metrics = json.loads(text).get("holdout_metrics")
    return metrics or None


def _value(metrics: dict | None, key: str) -> float | None:
    v = (metrics or {}).get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def decide(candidate: dict, baseline: dict | None, min_roc_auc: float, min_pr_auc: float,
           tolerance: float = 0.0) -> tuple[bool, list[str]]:
    """(deploy?, reasons). Every reason names the metric and both numbers, pass or fail."""
    ok, reasons = True, []
    for key, floor in (("roc_auc", min_roc_auc), ("pr_auc", min_pr_auc)):
        new = _value(candidate, key)
        if new is None:
            ok = False
            reasons.append(f"candidate {key} is missing or undefined")
            continue
        if new < floor:
            ok = False
            reasons.append(f"candidate {key} {new:.4f} is below the threshold {floor:.4f}")
        else:
            reasons.append(f"candidate {key} {new:.4f} meets the threshold {floor:.4f}")
        old = _value(baseline, key)
        if baseline is None:
            continue
        if old is None:
            reasons.append(f"deployed model has no {key}; not compared")
        elif new < old - tolerance:
            ok = False
            reasons.append(f"candidate {key} {new:.4f} is worse than the deployed model's {old:.4f}")
        else:
            reasons.append(f"candidate {key} {new:.4f} is not worse than the deployed model's {old:.4f}")
    if baseline is None:
        reasons.append("no deployed model to compare with")
    return ok, reasons


# ---- the InferenceService ------------------------------------------------------------------------------------
def load_template(path: str | Path | None = None) -> dict:
    from attribution.platform.spark_submit import manifests_root

    p = Path(path) if path else manifests_root() / "base" / "serving" / "inferenceservice.yaml"
    return yaml.safe_load(Path(p).read_text())


def _storage_env(isvc: dict) -> dict:
    container = isvc["spec"]["predictor"]["containers"][0]
    for env in container.get("env") or []:
        if env.get("name") == STORAGE_ENV:
            return env
    raise ValueError(f"InferenceService {isvc['metadata'].get('name')} has no {STORAGE_ENV} env on its first container")


def storage_uri_of(isvc: dict) -> str | None:
    return _storage_env(isvc).get("value")


def render_inference_service(model_uri: str, namespace: str = NAME, template: dict | None = None) -> dict:
    """manifests/base's InferenceService serving model_uri in namespace (what a create would send)."""
    doc = copy.deepcopy(template if template is not None else load_template())
    doc["metadata"]["namespace"] = namespace
    doc["metadata"].setdefault("annotations", {})[ANNOTATION] = model_uri
    _storage_env(doc)["value"] = model_uri
    return doc


def kube_client():
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def live_inference_service(api, namespace: str, name: str = NAME) -> dict | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def apply_inference_service(doc: dict, api=None) -> str:
    """Patch the live InferenceService to the new STORAGE_URI (merge patch of its own container list, with
    its resourceVersion so a concurrent change fails instead of being overwritten), or create it."""
    api = api or kube_client()
    ns, name = doc["metadata"]["namespace"], doc["metadata"]["name"]
    live = live_inference_service(api, ns, name)
    if live is None:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, doc)
        log.info("created InferenceService %s/%s serving %s", ns, name, storage_uri_of(doc))
        return "created"
    containers = copy.deepcopy(live["spec"]["predictor"]["containers"])
    _storage_env({"metadata": live["metadata"], "spec": {"predictor": {"containers": containers}}})["value"] = (
        storage_uri_of(doc))
    patch = {
        "metadata": {"resourceVersion": live["metadata"].get("resourceVersion"),
                     "annotations": {ANNOTATION: storage_uri_of(doc)}},
        "spec": {"predictor": {"containers": containers}},
    }
    api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch)
    log.info("patched InferenceService %s/%s to serve %s", ns, name, storage_uri_of(doc))
    return "patched"


# ---- the gate ---------------------------------------------------------------------------------------------------
def deploy_gate(
    candidate: dict,
    model_uri: str,
    deployed_model_uri: str = "",
    min_roc_auc: float = 0.0,
    min_pr_auc: float = 0.0,
    target: str = "kubernetes",
    namespace: str = NAME,
    output_dir: str | Path | None = None,
    api=None,
) -> Decision:
    """Decide, and deploy when the decision is yes. target 'kubernetes' applies through the API (an empty
    deployed_model_uri is read from the live InferenceService); 'manifest' writes inferenceservice.yaml to
    output_dir and applies nothing. The decision record is also written to output_dir/decision.json."""
    if target not in TARGETS:
        raise ValueError(f"deploy target must be one of {TARGETS}, got {target!r}")
    if target == "kubernetes" and not deployed_model_uri:
        api = api or kube_client()
        live = live_inference_service(api, namespace)
        deployed_model_uri = storage_uri_of(live) if live else ""
    baseline = None
    if deployed_model_uri:
        try:
            baseline = deployed_metrics(deployed_model_uri)
        except FileNotFoundError:
            log.warning("deployed model %s has no metadata.json; comparing with thresholds only", deployed_model_uri)
    ok, reasons = decide(candidate, baseline, min_roc_auc, min_pr_auc)
    if ok and deployed_model_uri and deployed_model_uri.rstrip("/") == model_uri.rstrip("/"):
        ok, reasons = False, reasons + ["the candidate is the model already deployed"]
    decision = Decision(
        deployed=False, reasons=reasons, candidate={k: _value(candidate, k) for k in GATED},
        baseline={k: _value(baseline, k) for k in GATED} if baseline else None,
        thresholds={"roc_auc": min_roc_auc, "pr_auc": min_pr_auc}, model_uri=model_uri,
        deployed_model_uri=deployed_model_uri or None, target=target,
    )
    out = Path(output_dir) if output_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    if ok:
        doc = render_inference_service(model_uri, namespace)
        if target == "kubernetes":
            decision.action = apply_inference_service(doc, api)
        else:
            if out is None:
                raise ValueError("target 'manifest' needs an output_dir for the manifest")
            path = out / "inferenceservice.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            decision.action, decision.manifest_path = "wrote manifest", str(path)
            log.info("deploy: would apply InferenceService %s/%s serving %s; wrote it to %s",
                     namespace, NAME, model_uri, path)
        decision.deployed = True
    else:
        log.info("deploy: not deploying %s: %s", model_uri, "; ".join(r for r in reasons))
    if out:
        (out / "decision.json").write_text(json.dumps(decision.to_dict(), indent=2))
    return decision
