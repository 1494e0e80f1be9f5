"""`attribution run --cloud emulated`, twice into one output: the pipeline with the cluster's semantics
against fake-gcs-server and bqemulator (started by the command itself) and the recording Kubernetes API.
The first run finds nothing live and creates the InferenceService; the second scores the first run's model
(read from gs:// through the live InferenceService) and its own candidate on the same holdout rows, and
rolls out as a canary (the Spark trainer's run: test_cloud_emulated_spark.py)."""

from __future__ import annotations

import json

import pytest

from attribution.platform.deploy import storage_uri_of
from tests.emulated_cli import ROWS, needs_emulators, objects, run_cli

pytestmark = needs_emulators


def test_two_emulated_runs_the_second_compares_with_the_first_on_the_same_rows(tmp_path):
    out = tmp_path / "run"
    first = run_cli(out)
    assert first["pipeline_root"].startswith("gs://attribution-pipeline/")
    assert first["model_uri"].startswith("gs://attribution-models/attribution/")
    # BigQuery made the features: loaded clicks, CREATE TABLE ... AS, EXPORT DATA into the step's gs:// URI.
    assert first["extract"]["engine"] == "bigquery" and first["extract"]["rows"] == int(ROWS)
    assert first["extract"]["export_uri"].startswith(first["features_uri"] + "/part-")
    assert any(n.endswith(".parquet") for n in objects(out, first["features_uri"]))
    assert {"model.json", "metadata.json", "feature_spec.json"} <= objects(out, first["model_uri"])
    d1 = first["decision"]
    assert d1["deployed"] is None and d1["deployed_model_uri"] is None and d1["action"] == "created", d1["reasons"]
    assert set(d1["candidate"]) == {"roc_auc", "pr_auc", "holdout_rows"} and d1["candidate"]["holdout_rows"] > 0

    second = run_cli(out)
    assert second["model_uri"] != first["model_uri"]
    d2 = second["decision"]
    assert d2["deployed_model_uri"] == first["model_uri"]  # read from the live InferenceService
    # The live model scored again on this run's holdout rows gives what it scored as a candidate: the
    # same rows (same clicks), not its own recorded figures from another day.
    assert d2["deployed"]["holdout_rows"] == d2["candidate"]["holdout_rows"] == d1["candidate"]["holdout_rows"]
    assert d2["deployed"] == pytest.approx(d1["candidate"])
    assert sum("on the same rows" in r for r in d2["reasons"]) == 2  # both metrics compared
    # Cat2Vec (gensim, several threads) makes each run's model a little different: either way, the
    # decision follows the numbers, and the live InferenceService follows the decision.
    better = all(d2["candidate"][k] >= d2["deployed"][k] for k in ("roc_auc", "pr_auc"))
    state = json.loads((out / "emulated" / "kubernetes.json").read_text())
    (isvc,) = [o["object"] for o in state["objects"] if o["key"][0] == "inferenceservices"]
    patches = [c for c in second["kubernetes_calls"] if c[0] == "patch"]
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    if better:  # canary, Ready (its storageUri loads), promoted to 100%
        assert d2["rolled_out"] and d2["action"] == "promoted", d2["reasons"]
        assert storage_uri_of(isvc) == second["model_uri"] and len(patches) == 2
    else:
        assert not d2["rolled_out"] and any("worse than the deployed model" in r for r in d2["reasons"])
        assert storage_uri_of(isvc) == first["model_uri"] and patches == []
