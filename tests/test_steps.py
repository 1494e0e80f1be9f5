"""Every branch of every pipeline step, called as the KFP components call them but without KFP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from manifest_checks import crd_problems
from test_components import FakeCore, FakeCustom
from test_deploy_gate import Controller, recording_api

from attribution import steps
from attribution.io import write_clicks
from attribution.synth import generate
from attribution.training.config import DEFAULT_PARAMS

VALID_FROM = "2017-11-09 12:00:00"


@pytest.fixture(scope="module")
def clicks_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clicks") / "clicks.parquet"
    write_clicks(generate(40_000, seed=11, start="2017-11-08 00:00:00", days=2), path)
    return path


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory, clicks_file) -> Path:
    out = tmp_path_factory.mktemp("features")
    steps.extract_features(str(clicks_file), "vectorized", str(out), str(out))
    return out


def test_resolve_input_pins_the_cache_only_with_a_snapshot():
    pinned = steps.resolve_input("2017-11-09", "run-1")
    assert pinned == steps.InputWindow("snapshot:2017-11-09", "2017-11-10")
    unpinned = steps.resolve_input("", "run-2")
    assert unpinned.cache_token == "run:run-2" and unpinned.window_end > "2017-11-10"


@pytest.mark.parametrize("engine", ["vectorized", "duckdb"])
def test_extract_features_with_a_file_engine(tmp_path, clicks_file, engine):
    meta = steps.extract_features(str(clicks_file), engine, str(tmp_path / "f"), "gs://unused/f")
    frame = pd.read_parquet(tmp_path / "f" / "features.parquet")
    assert meta["engine"] == engine and meta["rows"] == len(frame) == 40_000 and meta["source"] == str(clicks_file)


def test_extract_features_refuses_what_it_cannot_do(tmp_path, clicks_file):
    with pytest.raises(ValueError, match="feature_engine must be"):
        steps.extract_features(str(clicks_file), "pandas", str(tmp_path), str(tmp_path))
    with pytest.raises(ValueError, match="exports to GCS"):
        steps.extract_features("p.d.clicks", "bigquery", str(tmp_path), str(tmp_path))
    assert not any(tmp_path.iterdir()), "a refused extraction wrote nothing"


def test_bigquery_staging_tables_are_per_window_and_per_output():
    a = steps.staging_table("p", "staging", "2017-11-10", "gs://b/run-1/features")
    assert a == steps.staging_table("p", "staging", "2017-11-10", "gs://b/run-1/features")  # retries overwrite
    assert a.startswith("p.staging.features_20171110_")
    assert a != steps.staging_table("p", "staging", "2017-11-10", "gs://b/run-2/features")
    assert a != steps.staging_table("p", "staging", "2017-11-11", "gs://b/run-1/features")


@pytest.fixture(scope="module")
def cat2vec_dir(tmp_path_factory, features_dir) -> Path:
    out = tmp_path_factory.mktemp("cat2vec")
    meta = steps.fit_cat2vec(str(features_dir), str(out), VALID_FROM, seed=0)
    assert meta["vocabulary"] > 0 and 0 < meta["training_rows"] < 40_000
    return out


@pytest.fixture(scope="module")
def default_params(tmp_path_factory, features_dir, cat2vec_dir) -> Path:
    path = tmp_path_factory.mktemp("params") / "params.json"
    meta = steps.tune_params(str(features_dir), str(cat2vec_dir), str(path), VALID_FROM, max_evals=0)
    assert meta["max_evals"] == 0 and meta["max_depth"] == DEFAULT_PARAMS["max_depth"]
    return path


def test_tune_params_with_trials(tmp_path, features_dir, cat2vec_dir):
    meta = steps.tune_params(str(features_dir), str(cat2vec_dir), str(tmp_path / "p.json"), VALID_FROM, max_evals=2)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert len(doc["trials"]) == 2 and meta["max_evals"] == 2
    assert meta["sampled"] is False  # 40k rows fit the default budget
    assert {k: v for k, v in doc["params"].items() if isinstance(v, (int, float))} == {
        k: v for k, v in meta.items() if k not in ("max_evals", "sampled", "memory_budget_gib")}


# ---- under a memory budget smaller than the input ------------------------------------------------------
SMALL_BUDGET = "16MiB"  # 40k rows: ~60 MB for the in-memory build, ~40 MB for a features file loaded whole


def test_extract_features_out_of_core_when_the_input_does_not_fit(tmp_path, clicks_file, features_dir):
    meta = steps.extract_features(str(clicks_file), "vectorized", str(tmp_path), str(tmp_path), memory_budget=SMALL_BUDGET)
    assert meta["out_of_core"] is True and meta["rows"] == 40_000 and meta["memory_budget_gib"] == pytest.approx(16 / 1024, abs=1e-3)
    got = pd.read_parquet(tmp_path / "features.parquet").sort_values("row_id").reset_index(drop=True)
    want = pd.read_parquet(features_dir / "features.parquet")
    assert steps.extract_features(str(clicks_file), "vectorized", str(tmp_path / "m"), "")["out_of_core"] is False
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)


def test_cat2vec_tuning_and_training_sample_within_a_small_budget(tmp_path, features_dir, cat2vec_dir):
    c2v = steps.fit_cat2vec(str(features_dir), str(tmp_path / "c2v"), VALID_FROM, memory_budget=SMALL_BUDGET)
    assert c2v["sampled"] is True and 0 < c2v["sampled_rows"] < c2v["training_rows"] and c2v["vocabulary"] > 0
    meta = steps.tune_params(str(features_dir), str(tmp_path / "c2v"), str(tmp_path / "p.json"), VALID_FROM,
                             max_evals=2, memory_budget=SMALL_BUDGET)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert meta["sampled"] is True and len(doc["trials"]) == 2 and 0 < doc["sampled_rows"] < 40_000
    model = steps.train_model(str(features_dir), "", str(tmp_path / "c2v"), str(tmp_path / "p.json"),
                              str(tmp_path / "model"), "", "xgboost", "local", VALID_FROM, memory_budget=SMALL_BUDGET)
    assert model["streaming"] is True and model["holdout_roc_auc"] > 0.8
    result = steps.evaluate_model(str(tmp_path / "model"), str(features_dir), str(tmp_path / "metrics.json"),
                                  str(tmp_path / "report.html"), memory_budget=SMALL_BUDGET)
    # scanned in batches, the same holdout and the same ROC-AUC as the trainer's own
    assert result.scalars["rows"] == model["holdout_rows"]
    assert result.scalars["roc_auc"] == pytest.approx(model["holdout_roc_auc"], abs=1e-9)


def test_memory_budget_is_capped_by_the_container_limit(tmp_path, monkeypatch):
    limit = tmp_path / "memory.max"
    monkeypatch.setattr(steps, "CGROUP_LIMITS", (str(limit),))
    assert steps.memory_budget_bytes("1GiB") == 2**30  # no limit file: the budget as given
    with pytest.raises(ValueError, match="container memory limit"):
        steps.memory_budget_bytes("auto")
    limit.write_text("max\n")
    assert steps.container_memory_limit() is None
    limit.write_text(str(8 * 2**30))
    assert steps.memory_budget_bytes("auto") == 6 * 2**30
    assert steps.memory_budget_bytes("16GiB") == 6 * 2**30 and steps.memory_budget_bytes("2GiB") == 2 * 2**30
    with pytest.raises(ValueError, match="memory limit 'lots'"):
        steps.memory_budget_bytes("lots")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, features_dir, cat2vec_dir, default_params) -> tuple[Path, dict]:
    model = tmp_path_factory.mktemp("model")
    meta = steps.train_model(str(features_dir), str(features_dir), str(cat2vec_dir), str(default_params), str(model),
                             "gs://unused/model", "xgboost", "local", VALID_FROM)
    return model, meta


def test_train_model_with_xgboost(trained):
    model, meta = trained
    written = json.loads((model / "metadata.json").read_text())
    assert meta["trainer"] == "xgboost" and meta["feature_spec_hash"] == written["feature_spec_hash"]
    assert meta["holdout_roc_auc"] == written["holdout_metrics"]["roc_auc"] and meta["valid_from"] == VALID_FROM


def test_train_model_refuses_unknown_trainers_and_runtimes(tmp_path, default_params):
    for trainer, runtime, match in (("lightgbm", "local", "trainer"), ("xgboost", "cloud", "runtime")):
        with pytest.raises(ValueError, match=match):
            steps.train_model("f", "f", "c", str(default_params), str(tmp_path), "u", trainer, runtime)


def test_train_model_with_spark_on_kubernetes_reads_the_model_from_its_uri(tmp_path, default_params):
    # The SparkApplication writes the model straight to model_uri: the step reads its metadata from there.
    written = tmp_path / "bucket" / "model"
    written.mkdir(parents=True)
    (written / "metadata.json").write_text(json.dumps(
        {"feature_spec_hash": "abc", "valid_from": VALID_FROM, "holdout_metrics": {"roc_auc": 0.91, "pr_auc": float("nan")}}))
    custom = FakeCustom(["RUNNING", "COMPLETED"])
    meta = steps.train_model("unused", "gs://b/features", "unused", str(default_params), str(tmp_path / "empty"),
                             str(written), "spark", "kubernetes", VALID_FROM, spark_executors=3,
                             kube_apis=(custom, FakeCore()), spark_poll_s=0, cat2vec_uri="gs://b/cat2vec")
    app = custom.created
    assert crd_problems([app]) == [] and app["spec"]["executor"]["instances"] == 3
    args = app["spec"]["arguments"]
    assert args[args.index("--input") + 1] == "gs://b/features" and args[args.index("--model-dir") + 1] == str(written)
    assert json.loads(args[args.index("--params") + 1]) == json.loads(default_params.read_text())["params"]
    assert args[args.index("--cat2vec-dir") + 1] == "gs://b/cat2vec"  # the vectors the tuning step used
    assert meta["spark_state"] == "COMPLETED" and meta["holdout_roc_auc"] == 0.91 and "holdout_pr_auc" not in meta


def test_spark_on_kubernetes_gets_the_holdout_cut_the_other_steps_use(tmp_path, features_dir, default_params):
    """With no valid_from, Cat2Vec and tuning cut the holdout at the exact default quantile; the SparkApplication
    is handed that cut rather than left to estimate it (approxQuantile put it a few seconds off)."""
    from attribution.training.large import dataset_of, first_pass

    written = tmp_path / "bucket" / "model"
    written.mkdir(parents=True)
    (written / "metadata.json").write_text(json.dumps({"feature_spec_hash": "abc", "holdout_metrics": {}}))
    custom = FakeCustom(["COMPLETED"])
    steps.train_model(str(features_dir), "gs://b/features", "unused", str(default_params), str(tmp_path / "empty"),
                      str(written), "spark", "kubernetes", "", kube_apis=(custom, FakeCore()), spark_poll_s=0,
                      cat2vec_uri="gs://b/cat2vec")
    args = custom.created["spec"]["arguments"]
    cut = args[args.index("--valid-from") + 1]
    assert pd.Timestamp(cut).timestamp() == first_pass(dataset_of(features_dir), None).valid_from


@pytest.mark.spark
@pytest.mark.slow
def test_train_model_with_spark_locally(tmp_path, features_dir, cat2vec_dir):
    """The one run of the Spark entry point (spark_submit.run_local, a spark-submit process of its own) in
    these tests: the tuned parameters and the fit-cat2vec step's vectors reach the model it writes."""
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"params": {**DEFAULT_PARAMS, "max_depth": 3, "learning_rate": 0.2}}))
    meta = steps.train_model(str(features_dir), str(features_dir), str(cat2vec_dir), str(params), str(tmp_path / "m"),
                             "gs://unused", "spark", "local", VALID_FROM)
    written = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert meta["trainer"] == "spark" and written["trainer"] == "spark"
    assert written["params"]["max_depth"] == 3 and written["params"]["learning_rate"] == 0.2
    assert written["holdout_metrics"]["rows"] > 0
    np.testing.assert_array_equal(np.load(tmp_path / "m" / "cat2vec_vectors.npy"),
                                  np.load(cat2vec_dir / "cat2vec_vectors.npy"))


def test_evaluate_model(tmp_path, trained, features_dir):
    model, _ = trained
    result = steps.evaluate_model(str(model), str(features_dir), str(tmp_path / "m" / "metrics.json"),
                                  str(tmp_path / "r" / "report.html"))
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert result.scalars["roc_auc"] == metrics["roc_auc"] and result.scalars["rows"] > 0
    assert "<html" in (tmp_path / "r" / "report.html").read_text().lower()
    fpr, tpr, thresholds = result.roc
    assert len(fpr) == len(tpr) == len(thresholds) and max(thresholds) <= 1.0
    categories, matrix = result.confusion
    assert sum(map(sum, matrix)) == metrics["rows"] and len(categories) == 2


def write_metrics(tmp_path: Path, roc_auc: float) -> Path:
    path = tmp_path / f"metrics-{roc_auc}.json"
    path.write_text(json.dumps({"roc_auc": roc_auc, "pr_auc": 0.3}))  # no from_ts: the model's valid_from
    return path


def test_deploy_model_locally_writes_the_manifest_only_past_the_gate(tmp_path, trained, features_dir):
    model, _ = trained
    ok = steps.deploy_model(str(model), str(features_dir), str(write_metrics(tmp_path, 0.95)), str(tmp_path / "yes"),
                            0.5, 0.0, runtime="local")
    assert ok["deployed"] and (tmp_path / "yes" / "inferenceservice.yaml").is_file()
    assert ok["candidate_holdout_rows"] > 0 and 0.5 < ok["candidate_roc_auc"] <= 1
    no = steps.deploy_model(str(model), str(features_dir), str(write_metrics(tmp_path, 0.85)), str(tmp_path / "no"),
                            0.9999, 0.0, runtime="local")
    assert not no["deployed"] and not (tmp_path / "no" / "inferenceservice.yaml").exists() and no["reasons"]


def test_deploy_model_on_kubernetes_rolls_out_through_the_api(tmp_path, trained, features_dir):
    model, _ = trained
    api = recording_api(Controller(ready=True, after=1))
    result = steps.deploy_model(str(model), str(features_dir), str(write_metrics(tmp_path, 0.95)), str(tmp_path / "d"),
                                0.5, 0.0, runtime="kubernetes", api=api, poll_s=0)
    created = [c for c in api.calls if c[0] == "create"]
    assert result["deployed"] and result["action"] == "created" and len(created) == 1
    assert crd_problems([created[0][3]]) == []
    with pytest.raises(ValueError, match="runtime"):
        steps.deploy_model(str(model), str(features_dir), str(write_metrics(tmp_path, 0.95)), str(tmp_path / "e"),
                           0.5, 0.0, runtime="cloud")


COMPONENTS = sorted(Path(__file__).resolve().parents[1].joinpath("components").glob("[!_]*.py"))


@pytest.mark.parametrize("path", COMPONENTS, ids=lambda p: p.stem)
def test_component_bodies_are_one_call_into_steps(path):
    import ast

    source = path.read_text()
    (fn,) = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)]
    body_lines = fn.end_lineno - fn.body[0].lineno + 1
    calls = {f"{c.func.value.id}.{c.func.attr}" for c in ast.walk(fn) if isinstance(c, ast.Call)
             and isinstance(c.func, ast.Attribute) and isinstance(c.func.value, ast.Name) and c.func.value.id == "steps"}
    assert body_lines <= 30, f"{path.name}: {body_lines} lines of body"
    assert calls - {"steps.configure_logging"} == {f"steps.{fn.name}"}, f"{path.name} calls {calls}"


# ---- step 7: live metrics beside the holdout ---------------------------------------------------------------
def test_record_live_metrics_beside_the_holdout(tmp_path):
    from attribution.steps import record_live_metrics

    holdout = tmp_path / "metrics.json"
    holdout.write_text(json.dumps({"roc_auc": 0.97, "pr_auc": 0.4, "log_loss": 0.01}))
    live = tmp_path / "live_metrics.json"
    live.write_text(json.dumps({"roc_auc": 0.95, "pr_auc": 0.3, "log_loss": 0.02, "labelled": 900, "positives": 9,
                                "clicks": 1000, "calibration": {"ratio": 1.3}, "models": {}}))
    out = record_live_metrics(str(holdout), str(live), str(tmp_path / "out" / "live.json"))
    assert out["live_available"] and out["live_roc_auc"] == 0.95 and out["holdout_roc_auc"] == 0.97
    assert out["roc_auc_holdout_minus_live"] == pytest.approx(0.02) and out["live_calibration_ratio"] == 1.3
    doc = json.loads((tmp_path / "out" / "live.json").read_text())
    assert doc["live"]["labelled"] == 900 and doc["holdout"]["roc_auc"] == 0.97
    none = record_live_metrics(str(holdout), "", str(tmp_path / "none.json"))
    assert not none["live_available"] and "live_roc_auc" not in none and none["holdout_roc_auc"] == 0.97
    missing = record_live_metrics(str(holdout), str(tmp_path / "nope.json"), str(tmp_path / "m.json"))
    assert not missing["live_available"] and "could not read" in missing["live_source"]


def test_extract_features_with_bigquery_queries_then_exports_to_the_artifact():
    from test_cloud_bigquery_cost import RecordingBigQuery

    client = RecordingBigQuery(scanned=2**20)
    uri = "gs://b/run-1/extract-features/features"
    meta = steps.extract_features("p.d.clicks", "bigquery", "/unused", uri, window_end="2017-11-10", days_back=2,
                                  bq_project="p", bq_client=client)
    kinds = [c[0] for c in client.calls]
    # estimate, then the CREATE TABLE ... AS into the run's staging table, then EXPORT DATA into the artifact
    assert kinds == ["query", "query", "get_table", "query"] and client.calls[0][1].dry_run
    table = steps.staging_table("p", "attribution_staging", "2017-11-10", uri)
    assert client.calls[1][2].startswith(f"CREATE OR REPLACE TABLE `{table}`")
    assert f"uri = '{uri}/part-*.parquet'" in client.calls[3][2] and client.calls[3][2].endswith(f"FROM `{table}`")
    assert meta["engine"] == "bigquery" and meta["time_range"][0].startswith("2017-11-08")
