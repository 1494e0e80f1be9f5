"""`attribution run --cloud emulated --trainer spark`: the train step's SparkApplication, submitted to the
recording Kubernetes API, is run by the emulated operator from its document, reads and writes gs:// on
fake-gcs-server, and its executors write the scored holdout beside the model. Its own file: under
`pytest -n --dist loadfile` it runs on another worker than the two xgboost runs of test_cloud_emulated_run."""

from __future__ import annotations

import pytest

from tests.emulated_cli import needs_emulators, objects, run_cli

pytestmark = needs_emulators


@pytest.mark.spark
@pytest.mark.slow
def test_emulated_run_with_the_spark_trainer_runs_its_spark_application(tmp_path):
    out = tmp_path / "run"
    run = run_cli(out, "--trainer", "spark")
    creates = [c for c in run["kubernetes_calls"] if c[:2] == ["create", "sparkapplications"]]
    assert len(creates) == 1
    assert {"model.json", "metadata.json"} <= objects(out, run["model_uri"])
    scores = objects(out, run["model_uri"] + "-holdout-scores")
    assert scores and all(n.startswith("part-") and n.endswith(".parquet") for n in scores)
    assert run["decision"]["action"] == "created" and run["decision"]["candidate"]["holdout_rows"] > 0
