"""The emulated cluster of `attribution run --cloud emulated` (pipelines/emulated_run.py), without the
emulators: the SparkApplication is run from its own document, and the KServe stand-in makes a revision
Ready only when its storageUri loads as a model, so the deploy gate's canary is promoted or rolled back on
what the storage initializer would find."""

from __future__ import annotations

import pytest

from attribution.platform import deploy, spark_submit
from attribution.platform.kube_recording import RecordingCustomObjects
from pipelines.emulated_run import REPO, Controllers, spark_command


def test_spark_command_is_the_documents_entry_point_and_arguments():
    doc = spark_submit.render_spark_application("gs://b/features", "gs://b/models/run-1", "2017-11-09 00:00:00",
                                                extra_arguments=["--params", "{}"])
    cmd = spark_command(doc)
    assert cmd[1] == str(REPO / "attribution" / "training" / "spark_job.py")
    assert cmd[2:] == doc["spec"]["arguments"] and "gs://b/models/run-1" in cmd
    doc["spec"]["type"] = "Scala"
    with pytest.raises(ValueError, match="Python"):
        spark_command(doc)


def test_kserve_stand_in_promotes_a_loadable_canary_and_rolls_back_a_missing_one(tmp_path, serving_model_dir):
    controllers = Controllers({}, tmp_path, {})
    api = RecordingCustomObjects(on_write=controllers.on_write, state_file=tmp_path / "kubernetes.json")
    first = deploy.roll_out(deploy.render_inference_service(str(serving_model_dir)), api, poll_s=0)
    assert first.ok and first.action == "created"

    missing = str(tmp_path / "models" / "never-written")
    result = deploy.roll_out(deploy.render_inference_service(missing), api, ready_timeout_s=5, poll_s=0)
    assert not result.ok and result.action == "rolled back", result.steps
    # a fresh API over the same state file sees what the first one stored (a second run's view)
    again = RecordingCustomObjects(state_file=tmp_path / "kubernetes.json")
    live = again.get_namespaced_custom_object(deploy.GROUP, deploy.VERSION, "attribution", deploy.PLURAL, "attribution")
    assert deploy.storage_uri_of(live) == str(serving_model_dir)
    assert live["spec"]["predictor"]["canaryTrafficPercent"] == 0
    ready = next(c for c in live["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and str(serving_model_dir) in ready["message"]
