"""Training component's Spark path: the SparkApplication it renders is strictly valid against the Spark
Operator CRD, submission waits for a final state and surfaces the driver log, and the local mode runs the same entry
point (attribution/training/spark_job.py; its run with a local master: tests/test_steps.py)."""

from __future__ import annotations

import pytest
from manifest_checks import container_policy_problems, crd_problems

from attribution.platform import spark_submit
from attribution.platform.images import SPARK_IMAGE


def rendered(**kw):
    return spark_submit.render_spark_application(
        "gs://attribution-pipeline/run-1/features", "gs://attribution-pipeline/run-1/model",
        valid_from="2017-11-09 00:00:00", executor_instances=kw.pop("executor_instances", 4),
        executor_memory=kw.pop("executor_memory", "12g"), namespace="attribution", name="attribution-train-test1", **kw,
    )


def test_rendered_spark_application_validates_strictly():
    doc = rendered()
    assert crd_problems([doc]) == []
    assert container_policy_problems([doc]) == []
    spec = doc["spec"]
    assert spec["image"] == SPARK_IMAGE and "suspend" not in spec
    assert spec["arguments"] == ["--input", "gs://attribution-pipeline/run-1/features", "--model-dir",
                                 "gs://attribution-pipeline/run-1/model", "--valid-from", "2017-11-09 00:00:00"]
    assert spec["executor"]["instances"] == 4 and spec["executor"]["memory"] == "12g"
    assert spec["executor"]["memoryLimit"] == "14Gi"  # heap + the template's 2g overhead
    assert spec["mainApplicationFile"].endswith("attribution/training/spark_job.py")
    bad = rendered()
    bad["spec"]["executor"]["gpuCount"] = 1
    assert crd_problems([bad]), "unknown fields must be rejected"


def test_unique_names_are_dns_labels():
    a, b = spark_submit.unique_name(), spark_submit.unique_name()
    assert a != b and len(a) <= 40 and a.replace("-", "").isalnum() and a == a.lower()


class FakeCustom:
    def __init__(self, states):
        self.states, self.created = list(states), None

    def create_namespaced_custom_object(self, group, version, ns, plural, body):
        assert (group, version, plural) == ("sparkoperator.k8s.io", "v1beta2", "sparkapplications")
        self.created = body

    def get_namespaced_custom_object(self, group, version, ns, plural, name):
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"status": {"applicationState": {"state": state, "errorMessage": "boom" if state == "FAILED" else ""},
                           "driverInfo": {"podName": f"{name}-driver"}}}


class FakeCore:
    def read_namespaced_pod_log(self, name, namespace, tail_lines):
        return f"log of {name} in {namespace}: holdout metrics ..."


def test_submit_waits_and_surfaces_the_driver_log(capsys):
    custom = FakeCustom(["SUBMITTED", "RUNNING", "RUNNING", "COMPLETED"])
    result = spark_submit.submit_and_wait(rendered(), custom, FakeCore(), poll_s=0, sleep=lambda s: None)
    assert result.succeeded and result.state == "COMPLETED" and custom.created["metadata"]["name"] == result.name
    assert "log of attribution-train-test1-driver in attribution" in capsys.readouterr().out


def test_failed_run_raises_with_the_log():
    with pytest.raises(RuntimeError, match="FAILED: boom(.|\n)*log of"):
        spark_submit.submit_and_wait(rendered(), FakeCustom(["RUNNING", "FAILED"]), FakeCore(), poll_s=0,
                                     sleep=lambda s: None)


def test_local_command_is_the_same_entry_point():
    cmd = spark_submit.local_command("f/", "m/", "2017-11-09")
    assert cmd[1].endswith("attribution/training/spark_job.py") and spark_submit.ENTRY_POINT.is_file()
    assert rendered()["spec"]["mainApplicationFile"].endswith("/".join(spark_submit.ENTRY_POINT.parts[-2:]))
