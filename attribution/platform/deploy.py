"""The deploy gate: roll the KServe InferenceService to a new model only when it is good enough, as a canary.

The candidate and the deployed model are scored by the caller's `score(model_uri)` on the SAME holdout rows
(attribution.evaluation.compare.Holdout), so the comparison is about quality, not about two days' base
rates. A candidate is deployed when its ROC-AUC and PR-AUC reach the thresholds and are not worse than the
deployed model's. "Nothing live" (no InferenceService, or its URI holds no model: gs:// NotFound) means the
thresholds alone decide.

Rollout (docs/rollout.md): a missing InferenceService is created and awaited; a live one is patched to the
new URI with `canaryTrafficPercent`, the new revision is awaited (Ready, with a timeout), then promoted (the
canary field removed: 100%) or rolled back (the previous URI restored, 0% to the new revision). The live
URI has one home, the InferenceService's own URI field, which no kustomization sets (see docs/rollout.md),
so `kubectl apply -k` leaves it alone. Locally the gate writes the manifest it would apply.

    record = deploy_gate("gs://b/models/run-7", holdout.score, min_roc_auc=0.9, min_pr_auc=0.1,
                         target="kubernetes", canary_percent=10)
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from attribution import storage
from attribution.model.bundle import ModelLoadError

log = logging.getLogger(__name__)
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
NAME = "attribution"
GATED = ("roc_auc", "pr_auc")
REPORTED = ("roc_auc", "pr_auc", "holdout_rows")
TARGETS = ("kubernetes", "manifest")
ANNOTATION = "attribution.example.com/model-uri"
DEFAULT_CANARY_PERCENT = 10
DEFAULT_READY_TIMEOUT_S = 600.0


@dataclass
class Decision:
    deployed: bool
    reasons: list[str]
    candidate: dict
    deployed_metrics: dict | None
    thresholds: dict
    model_uri: str
    deployed_model_uri: str | None
    target: str
    action: str | None = None  # created / promoted / rolled back / wrote manifest
    manifest_path: str | None = None
    rollout: list[str] = field(default_factory=list)  # each step of the canary, in order
    decided_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    def to_dict(self) -> dict:
        return asdict(self)


# ---- reading the deployed model ------------------------------------------------------------------------
def read_text(uri: str) -> str:
    """A small file from a local path or a URI (gs:// through attribution.storage)."""
    return storage.read_text(uri)


def _value(metrics: dict | None, key: str) -> float | None:
    v = (metrics or {}).get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def score_deployed(score: Callable[[str], dict], deployed_model_uri: str) -> tuple[dict | None, str | None]:
    """(metrics, None), or (None, why) when nothing usable is live at deployed_model_uri."""
    if not deployed_model_uri:
        return None, "nothing live: no deployed model to compare with"
    try:
        return score(deployed_model_uri), None
    except FileNotFoundError as err:
        return None, f"nothing live at {deployed_model_uri} ({err}); comparing with thresholds only"
    except ModelLoadError as err:
        return None, f"the deployed model {deployed_model_uri} cannot be scored ({err}); comparing with thresholds only"


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
            reasons.append(f"candidate {key} {new:.4f} is worse than the deployed model's {old:.4f} on the same rows")
        else:
            reasons.append(f"candidate {key} {new:.4f} is not worse than the deployed model's {old:.4f} on the same rows")
    return ok, reasons


# ---- the InferenceService ------------------------------------------------------------------------------------
def load_template(path: str | Path | None = None) -> dict:
    from attribution.platform.spark_submit import manifests_root

    p = Path(path) if path else manifests_root() / "base" / "serving" / "inferenceservice.yaml"
    return yaml.safe_load(Path(p).read_text())


def storage_uri_of(isvc: dict) -> str | None:
    """The model URI the InferenceService serves: spec.predictor.model.storageUri (None before the first
    rollout: git never sets it, docs/rollout.md)."""
    model = isvc["spec"]["predictor"].get("model")
    if model is None:
        raise ValueError(f"InferenceService {isvc['metadata'].get('name')} has no spec.predictor.model (its "
                         "model server is the ServingRuntime that model.runtime names)")
    return model.get("storageUri")


def uri_patch(live: dict, model_uri: str) -> dict:
    """The spec.predictor part of a merge patch that points `live` at model_uri and changes nothing else:
    one scalar, so the runtime's container (image, probes) is never re-sent."""
    storage_uri_of(live)  # a predictor without a model section is refused, not patched into one
    return {"model": {"storageUri": model_uri}}


def render_inference_service(model_uri: str, namespace: str = NAME, template: dict | None = None) -> dict:
    """manifests/base's InferenceService serving model_uri in namespace (what a create would send)."""
    doc = copy.deepcopy(template if template is not None else load_template())
    doc["metadata"]["namespace"] = namespace
    doc["metadata"].setdefault("annotations", {})[ANNOTATION] = model_uri
    storage_uri_of(doc)
    doc["spec"]["predictor"]["model"]["storageUri"] = model_uri
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


# ---- readiness and the canary -----------------------------------------------------------------------------------
def readiness(isvc: dict, generation: int | None) -> str:
    """'ready', 'failed' or 'pending' for the revision made by `generation` (KServe's status: Ready
    condition, the predictor's latest created revision also its latest ready one)."""
    status = isvc.get("status") or {}
    if generation is not None and int(status.get("observedGeneration") or 0) < int(generation):
        return "pending"
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    predictor = (status.get("components") or {}).get("predictor") or {}
    created, latest_ready = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
    if ready and ready.get("status") == "True" and (created is None or created == latest_ready):
        return "ready"
    failed = next((c for c in status.get("conditions") or [] if c.get("type") in ("PredictorReady", "Ready")
                   and c.get("status") == "False" and "Failed" in str(c.get("reason") or "")), None)
    return "failed" if failed else "pending"


def wait_ready(api, namespace: str, name: str, generation: int | None, timeout_s: float, poll_s: float,
               sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> str:
    """Poll the InferenceService until its new revision is ready or failed, or the timeout: the last state."""
    deadline = clock() + timeout_s
    while True:
        state = readiness(api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name), generation)
        if state != "pending":
            return state
        if clock() >= deadline:
            return "timed out"
        sleep(poll_s)


@dataclass
class RolloutResult:
    ok: bool
    action: str
    steps: list[str]


def roll_out(doc: dict, api, canary_percent: int = DEFAULT_CANARY_PERCENT,
             ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S, poll_s: float = 10.0,
             sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> RolloutResult:
    """Create the InferenceService and wait for Ready, or patch the live one as a canary at canary_percent,
    wait for the new revision, then promote it (100%) or roll back to the previous URI."""
    if not 0 < int(canary_percent) <= 100:
        raise ValueError(f"canary_percent must be in 1..100, got {canary_percent}")
    ns, name, uri = doc["metadata"]["namespace"], doc["metadata"]["name"], storage_uri_of(doc)
    live = live_inference_service(api, ns, name)
    if live is None:
        created = api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, doc)
        state = wait_ready(api, ns, name, (created or {}).get("metadata", {}).get("generation"), ready_timeout_s,
                           poll_s, sleep, clock)
        steps = [f"created {ns}/{name} serving {uri}", f"first revision {state}"]
        log.info("; ".join(steps))
        return RolloutResult(state == "ready", "created" if state == "ready" else f"created, {state}", steps)
    previous = storage_uri_of(live)
    canary = {
        "metadata": {"resourceVersion": live["metadata"].get("resourceVersion"), "annotations": {ANNOTATION: uri}},
        "spec": {"predictor": {**uri_patch(live, uri), "canaryTrafficPercent": int(canary_percent)}},
    }
    patched = api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, canary)
    steps = [f"canary: {ns}/{name} -> {uri} at {canary_percent}% (previous {previous})"]
    state = wait_ready(api, ns, name, (patched or {}).get("metadata", {}).get("generation"), ready_timeout_s,
                       poll_s, sleep, clock)
    steps.append(f"canary revision {state}")
    if state == "ready":
        # Removing the field sends 100% to the latest revision (KServe's promotion).
        api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name,
                                           {"spec": {"predictor": {"canaryTrafficPercent": None}}})
        steps.append(f"promoted {uri} to 100%")
        log.info("; ".join(steps))
        return RolloutResult(True, "promoted", steps)
    # Roll back: the previous URI again, and 0% to the revision the failed canary made.
    api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, {
        "metadata": {"annotations": {ANNOTATION: previous}},
        "spec": {"predictor": {**uri_patch(live, previous), "canaryTrafficPercent": 0}},
    })
    steps.append(f"rolled back to {previous}")
    log.warning("; ".join(steps))
    return RolloutResult(False, "rolled back", steps)


# ---- the gate ---------------------------------------------------------------------------------------------------
def deploy_gate(
    model_uri: str,
    score: Callable[[str], dict],
    deployed_model_uri: str = "",
    min_roc_auc: float = 0.0,
    min_pr_auc: float = 0.0,
    target: str = "kubernetes",
    namespace: str = NAME,
    output_dir: str | Path | None = None,
    api=None,
    canary_percent: int = DEFAULT_CANARY_PERCENT,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    poll_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Decision:
    """Score the candidate and the deployed model with `score` (the same holdout rows), decide, and roll out
    when the decision is yes. target 'kubernetes' applies through the API (an empty deployed_model_uri is
    read from the live InferenceService); 'manifest' writes inferenceservice.yaml to output_dir and applies
    nothing. The decision record is also written to output_dir/decision.json."""
    if target not in TARGETS:
        raise ValueError(f"deploy target must be one of {TARGETS}, got {target!r}")
    if target == "kubernetes" and not deployed_model_uri:
        api = api or kube_client()
        live = live_inference_service(api, namespace)
        deployed_model_uri = (storage_uri_of(live) or "") if live else ""
    candidate = score(model_uri)
    same = bool(deployed_model_uri) and deployed_model_uri.rstrip("/") == model_uri.rstrip("/")
    baseline, why = (candidate, None) if same else score_deployed(score, deployed_model_uri)
    if baseline is not None and candidate.get("holdout_rows") != baseline.get("holdout_rows"):
        raise ValueError(f"the candidate was scored on {candidate.get('holdout_rows')} rows and the deployed model on "
                         f"{baseline.get('holdout_rows')}: the gate compares on the same rows only")
    ok, reasons = decide(candidate, baseline, min_roc_auc, min_pr_auc)
    if why:
        reasons.append(why)
    if ok and same:
        ok, reasons = False, reasons + ["the candidate is the model already deployed"]
    decision = Decision(
        deployed=False, reasons=reasons, candidate={k: candidate.get(k) for k in REPORTED},
        deployed_metrics={k: baseline.get(k) for k in REPORTED} if baseline else None,
        thresholds={"roc_auc": min_roc_auc, "pr_auc": min_pr_auc}, model_uri=model_uri,
        deployed_model_uri=deployed_model_uri or None, target=target,
    )
    out = Path(output_dir) if output_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    if ok:
        doc = render_inference_service(model_uri, namespace)
        if target == "kubernetes":
            result = roll_out(doc, api or kube_client(), canary_percent, ready_timeout_s, poll_s, sleep, clock)
            decision.action, decision.rollout, decision.deployed = result.action, result.steps, result.ok
        else:
            if out is None:
                raise ValueError("target 'manifest' needs an output_dir for the manifest")
            path = out / "inferenceservice.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            decision.action, decision.manifest_path, decision.deployed = "wrote manifest", str(path), True
            log.info("deploy: would apply InferenceService %s/%s serving %s; wrote it to %s",
                     namespace, NAME, model_uri, path)
    else:
        log.info("deploy: not deploying %s: %s", model_uri, "; ".join(reasons))
    if out:
        (out / "decision.json").write_text(json.dumps(decision.to_dict(), indent=2))
    return decision
