"""The pipeline: the checked-in IR YAML is current and loads back as a PipelineSpec; every task is sized,
retried and cached as intended; the cluster commands call kfp.Client correctly; and `attribution run`
executes the real pipeline through kfp.local with each step's artifacts where the next step read them."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

import numpy as np
import pytest
import yaml
from google.protobuf import json_format
from kfp.components import load_component_from_file
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines import cli as pcli
from pipelines.attribution_pipeline import YAML_PATH, compile_pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(YAML_PATH.read_text())


def test_checked_in_yaml_is_current(tmp_path):
    fresh = compile_pipeline(tmp_path / "p.yaml").read_text()
    assert fresh == YAML_PATH.read_text(), "stale: run `attribution pipeline compile` and commit the YAML"


def test_yaml_loads_back_with_kfp(spec):
    component = load_component_from_file(str(YAML_PATH))
    assert component.name == "attribution-train"
    assert {"data", "feature_engine", "trainer", "valid_from", "max_evals", "min_roc_auc", "min_pr_auc",
            "deployed_model_uri", "snapshot_date", "days_back"} <= set(component.component_spec.inputs)
    parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    assert parsed.pipeline_info.name == "attribution-train"
    assert set(parsed.root.dag.tasks) == {"resolve-input", "extract-features", "fit-cat2vec", "tune-params",
                                          "train-model", "evaluate-model", "record-live-metrics", "deploy-model"}


def test_tasks_are_sized_retried_and_cached_as_intended(spec):
    tasks = spec["root"]["dag"]["tasks"]
    executors = spec["deploymentSpec"]["executors"]
    for name, task in tasks.items():
        res = executors[task["componentRef"]["name"].replace("comp-", "exec-")]["container"]["resources"]
        for key in ("cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit"):
            assert key in res, (name, key)
        assert res["cpuRequest"] <= res["cpuLimit"] and res["memoryRequest"] <= res["memoryLimit"], name
    for name in ("extract-features", "train-model", "deploy-model"):
        assert tasks[name]["retryPolicy"]["maxRetryCount"] >= 1, name
    assert tasks["deploy-model"]["cachingOptions"] == {} and tasks["resolve-input"]["cachingOptions"] == {}
    # Extraction is cached only through its inputs: the token is the run id unless a snapshot pins it.
    extract = tasks["extract-features"]
    assert extract["cachingOptions"].get("enableCache") is True
    token = extract["inputs"]["parameters"]["cache_token"]["taskOutputParameter"]
    assert token == {"outputParameterKey": "cache_token", "producerTask": "resolve-input"}
    run_id = tasks["resolve-input"]["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"]
    assert run_id == "{{$.pipeline_job_uuid}}"


def test_components_are_offline_and_on_the_pipeline_image(spec):
    from attribution.platform.images import PIPELINE_IMAGE

    for name, ex in spec["deploymentSpec"]["executors"].items():
        c = ex["container"]
        assert c["image"] == PIPELINE_IMAGE, name
        assert "pip install" not in " ".join(c["command"]), name


def test_resolve_input_pins_the_cache_token():
    from components.resolve_input import resolve_input

    fn = resolve_input.python_func
    assert fn("2017-11-08", "abc") == ("snapshot:2017-11-08", "2017-11-09")
    assert fn("", "abc").cache_token == "run:abc"


class FakeClient:
    def __init__(self):
        self.calls = []

    def create_run_from_pipeline_package(self, pipeline_file, **kw):
        self.calls.append(("run", yaml.safe_load(Path(pipeline_file).read_text())["pipelineInfo"]["name"], kw))
        return type("R", (), {"run_id": "run-1"})()

    def create_experiment(self, name, namespace=None):
        self.calls.append(("experiment", name))
        return type("E", (), {"experiment_id": "exp-1"})()

    def create_recurring_run(self, **kw):
        self.calls.append(("recurring", kw["pipeline_package_path"] and "package", kw))
        return type("J", (), {"recurring_run_id": "job-1"})()


def parse(argv):
    from attribution.cli import build_parser

    return build_parser().parse_args(argv)


def test_submit_and_schedule_through_kfp_client():
    c = FakeClient()
    a = parse(["pipeline", "submit", "--host", "http://kfp", "--param", "data=proj.ds.clicks",
               "--param", "feature_engine=bigquery", "--param", "max_evals=30", "--param", "min_roc_auc=0.95"])
    assert pcli.submit_cmd(a, c) == "run-1"
    _, name, kw = c.calls[0]
    assert name == "attribution-train" and kw["experiment_name"] == "attribution"
    assert kw["arguments"] == {"data": "proj.ds.clicks", "feature_engine": "bigquery", "max_evals": 30,
                               "min_roc_auc": 0.95}
    assert kw["service_account"] == "attribution-pipeline"
    a = parse(["pipeline", "schedule", "--host", "http://kfp", "--cron", "0 0 3 * * *", "--param",
               "data=proj.ds.clicks", "--param", "feature_engine=bigquery"])
    assert pcli.schedule_cmd(a, c) == "job-1"
    kw = c.calls[-1][2]
    assert kw["cron_expression"] == "0 0 3 * * *" and kw["experiment_id"] == "exp-1"
    assert kw["params"]["days_back"] == 3 and kw["max_concurrency"] == 1 and kw["no_catchup"] is True
    with pytest.raises(ValueError, match="unknown pipeline parameter"):
        pcli.submit_cmd(parse(["pipeline", "submit", "--host", "h", "--param", "dat=x"]), c)


def test_compile_command(tmp_path):
    from attribution.cli import main

    main(["pipeline", "compile", "--output", str(tmp_path / "p.yaml")])
    assert (tmp_path / "p.yaml").read_text() == YAML_PATH.read_text()


@pytest.mark.slow
def test_attribution_run_through_kfp_local(tmp_path, capsys):
    from attribution.cli import main

    out = tmp_path / "run"
    # 40k synthetic clicks (~40 holdout positives): what is checked is where each step's artifacts go, not
    # the model's size (the 300k-row run is `make demo`'s; 300k made this the suite's second-slowest test).
    main(["run", "--rows", "40000", "--output", str(out)])
    printed = capsys.readouterr().out
    assert str(out / "model") in printed and str(out / "report.html") in printed
    run = json.loads((out / "run.json").read_text())
    steps = {k: Path(v) for k, v in run["steps"].items()}
    # Each step's outputs exist where kfp.local put them, and the next step read them from there.
    expect = {
        "extract-features": ["features/features.parquet"],
        "fit-cat2vec": ["cat2vec/cat2vec_vectors.npy", "cat2vec/cat2vec_vocab.json"],
        "tune-params": ["params"],
        "train-model": ["model/model.json", "model/metadata.json", "model/feature_spec.json",
                        "model/cat2vec_vectors.npy"],
        "evaluate-model": ["metrics", "report"],
        "record-live-metrics": ["live"],
        "deploy-model": ["decision/decision.json"],
    }
    for step, files in expect.items():
        for f in files:
            assert (steps[step] / f).is_file(), f"{step}: {f} missing"
        assert (steps[step] / "executor_output.json").is_file()
    consumed = {
        "fit-cat2vec": {"features": steps["extract-features"] / "features"},
        "tune-params": {"features": steps["extract-features"] / "features", "cat2vec": steps["fit-cat2vec"] / "cat2vec"},
        "train-model": {"features": steps["extract-features"] / "features", "cat2vec": steps["fit-cat2vec"] / "cat2vec",
                        "params": steps["tune-params"] / "params"},
        "evaluate-model": {"model": steps["train-model"] / "model", "features": steps["extract-features"] / "features"},
        "deploy-model": {"model": steps["train-model"] / "model", "metrics": steps["evaluate-model"] / "metrics",
                         "features": steps["extract-features"] / "features"},  # both models scored on its holdout
    }
    produced = {"fit-cat2vec": "cat2vec", "tune-params": "params", "train-model": "model",
                "evaluate-model": "report", "deploy-model": "decision"}
    for step, inputs in consumed.items():
        executor_output = json.loads((steps[step] / "executor_output.json").read_text())
        read_from = executor_output["artifacts"][produced[step]]["artifacts"][0]["metadata"]["read_from"]
        assert read_from == {k: str(v) for k, v in inputs.items()}, step
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] > 0 and 0.5 < metrics["roc_auc"] <= 1.0
    assert (out / "model" / "model.json").is_file() and (out / "report.html").stat().st_size > 1000
    decision = json.loads((out / "deploy" / "decision.json").read_text())
    assert isinstance(decision["deployed"], bool) and decision["reasons"]
    # the model carries the fit_cat2vec step's vectors, not a refit of its own
    step_vectors = np.load(steps["fit-cat2vec"] / "cat2vec" / "cat2vec_vectors.npy")
    np.testing.assert_array_equal(np.load(out / "model" / "cat2vec_vectors.npy"), step_vectors)


def test_schedule_on_evidence_runs_only_when_an_alert_fires_or_the_last_run_is_old():
    from datetime import datetime, timedelta

    now = datetime(2026, 1, 10, tzinfo=UTC)

    class Client(FakeClient):
        def __init__(self, last):
            super().__init__()
            self.last = last

        def get_experiment(self, experiment_name, namespace=None):
            return type("E", (), {"experiment_id": "exp-1"})()

        def list_runs(self, **kw):
            assert kw["sort_by"] == "created_at desc"
            runs = [type("R", (), {"created_at": self.last})()] if self.last else []
            return type("L", (), {"runs": runs})()

    a = parse(["pipeline", "schedule", "--host", "h", "--on-evidence", "--max-age-days", "7", "--param", "data=p.d.t"])
    recent = Client(now - timedelta(days=2))
    assert pcli.evidence_cmd(a, recent, firing=[], now=now) is None and recent.calls == []
    assert pcli.evidence_cmd(a, recent, firing=["SomethingElse"], now=now) is None
    assert pcli.evidence_cmd(a, recent, firing=["AttributionFeatureDrift"], now=now) == "run-1"
    assert "AttributionFeatureDrift" in recent.calls[-1][2]["run_name"]
    assert recent.calls[-1][2]["arguments"] == {"data": "p.d.t", "days_back": 3}
    old = Client(now - timedelta(days=8))
    assert pcli.evidence_cmd(a, old, firing=[], now=now) == "run-1" and "8.0 days old" in old.calls[-1][2]["run_name"]
    assert pcli.evidence_cmd(a, Client(None), firing=[], now=now) == "run-1"
    with pytest.raises(ValueError, match="--cron"):
        pcli.schedule_cmd(parse(["pipeline", "schedule", "--host", "h"]), FakeClient())


@pytest.mark.slow
def test_attribution_run_within_a_memory_budget_smaller_than_its_input(tmp_path):
    """`attribution run --memory-budget` on a click file larger than the budget: extraction goes out of
    core, Cat2Vec and tuning sample, training streams, evaluation scans, and the run completes."""
    from attribution.cli import main
    from attribution.features.build import BUILD_BYTES_PER_ROW, LOAD_BYTES_PER_ROW
    from attribution.features.out_of_core import parse_memory
    from attribution.io import write_clicks
    from attribution.synth import generate

    clicks = tmp_path / "clicks.csv"
    write_clicks(generate(250_000, seed=3, start="2017-11-07 00:00:00", days=2), clicks)
    budget = f"{clicks.stat().st_size // 2 // 2**20}MiB"
    assert clicks.stat().st_size > parse_memory(budget)
    # every step would hold more than the budget if it read its input whole
    assert 250_000 * min(BUILD_BYTES_PER_ROW, LOAD_BYTES_PER_ROW) > parse_memory(budget)
    out = tmp_path / "run"
    main(["run", "--data", str(clicks), "--output", str(out), "--max-evals", "2", "--memory-budget", budget])
    run = json.loads((out / "run.json").read_text())
    steps = {k: Path(v) for k, v in run["steps"].items()}

    def metadata(step: str, artifact: str) -> dict:
        doc = json.loads((steps[step] / "executor_output.json").read_text())
        return doc["artifacts"][artifact]["artifacts"][0]["metadata"]

    extracted = metadata("extract-features", "features")
    assert extracted["out_of_core"] is True and extracted["rows"] == 250_000
    assert extracted["memory_budget_gib"] == pytest.approx(parse_memory(budget) / 2**30, abs=1e-3)
    c2v = metadata("fit-cat2vec", "cat2vec")
    assert c2v["sampled"] is True and c2v["vocabulary"] > 0
    assert metadata("tune-params", "params")["sampled"] is True
    model = metadata("train-model", "model")
    assert model["streaming"] is True
    sampled = json.loads((out / "model" / "metadata.json").read_text())["rows"]["train_sampled"]
    assert 0 < sampled < 250_000 * 0.75  # down-sampled to what the budget holds
    metrics = json.loads((out / "metrics.json").read_text())
    # evaluation scored exactly the trainer's holdout, batch by batch
    assert metrics["rows"] == model["holdout_rows"] and metrics["input_rows"] == 250_000
    assert metrics["roc_auc"] == pytest.approx(model["holdout_roc_auc"], abs=1e-9) and metrics["roc_auc"] > 0.8
