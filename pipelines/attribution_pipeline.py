"""The training pipeline: features -> Cat2Vec -> Hyperopt -> train -> evaluate -> gated deploy.

Every task has explicit CPU/memory requests and limits, retries where a failure can be transient
(BigQuery, the Spark Operator, the Kubernetes API), and the feature extraction is cached only when
`snapshot_date` pins its input (its cache token is otherwise the run's id; see components/resolve_input).

Compile: `attribution pipeline compile` (writes pipelines/attribution_pipeline.yaml, checked in and
tested to be current). Local run: `attribution run` (pipelines/local_run.py, kfp.local).
"""

from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from attribution.features.compute import DEFAULT_ENGINE
from attribution.platform import images
from attribution.steps import DEFAULT_MEMORY_BUDGET
from components import (
    deploy_model,
    evaluate_model,
    extract_features,
    fit_cat2vec,
    record_live_metrics,
    resolve_input,
    train_model,
    tune_params,
)
from pipelines import PIPELINE_NAME

YAML_PATH = Path(__file__).resolve().with_name("attribution_pipeline.yaml")

# (cpu request, cpu limit, memory request, memory limit) per step, for the full 184.9M-row data on the
# cluster; the `spark` trainer's own pods are sized in the SparkApplication (spark_executor_* params).
RESOURCES = {
    "extract": ("2", "4", "16G", "24G"),
    "cat2vec": ("1", "2", "8G", "12G"),
    "tune": ("4", "4", "24G", "32G"),
    "train": ("4", "4", "24G", "32G"),
    "evaluate": ("2", "2", "16G", "24G"),
    "deploy": ("250m", "500m", "256M", "512M"),
    "resolve": ("100m", "250m", "128M", "256M"),
    "live": ("100m", "250m", "256M", "512M"),
}


def _size(task: dsl.PipelineTask, step: str) -> dsl.PipelineTask:
    cpu_req, cpu_lim, mem_req, mem_lim = RESOURCES[step]
    return (task.set_cpu_request(cpu_req).set_cpu_limit(cpu_lim)
            .set_memory_request(mem_req).set_memory_limit(mem_lim))


class Outputs(NamedTuple):
    features: Dataset
    model: Model
    metrics: Metrics
    report: HTML
    decision: Artifact


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="TalkingData click attribution: window features, Cat2Vec, Hyperopt-tuned XGBoost, "
                "holdout evaluation and a gated KServe rollout.",
)
def attribution_pipeline(
    data: str,
    feature_engine: str = DEFAULT_ENGINE,
    trainer: str = "xgboost",
    runtime: str = "kubernetes",
    valid_from: str = "",
    max_evals: int = 20,
    min_roc_auc: float = 0.9,
    min_pr_auc: float = 0.05,
    deployed_model_uri: str = "",
    snapshot_date: str = "",
    days_back: int = 0,
    bq_project: str = "",
    bq_location: str = "US",
    bq_staging_dataset: str = "attribution_staging",
    seed: int = 0,
    spark_executors: int = 2,
    spark_executor_memory: str = "8g",
    namespace: str = "attribution",
    live_metrics_uri: str = "",
    memory_budget: str = DEFAULT_MEMORY_BUDGET,
    canary_traffic_percent: int = 10,
) -> Outputs:
    """data: a click file (CSV/Parquet path the task can read) or, with feature_engine=bigquery, a table
    project.dataset.table. runtime: kubernetes (cluster) or local (kfp.local: Spark with a local master,
    the deploy step writes the manifest instead of applying it). days_back > 0 trains on that many whole
    days before the run's day (BigQuery), or before the end of snapshot_date, which also enables caching.
    live_metrics_uri: the serving model's live_metrics.json (or the monitor's /v1/metrics), recorded beside
    the candidate's holdout metrics.
    memory_budget: what each file step may use ("16GiB", or "auto": 75% of its task's memory limit); a
    step whose input would not fit goes out of core, samples or streams (docs/pipelines.md)."""
    # Cached only when snapshot_date pins the input: otherwise the cache token is the run's id.
    pin = _size(resolve_input(snapshot_date=snapshot_date, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER), "resolve")
    pin.set_display_name("resolve-input").set_caching_options(False)
    extracted = _size(extract_features(
        data=data, feature_engine=feature_engine, cache_token=pin.outputs["cache_token"],
        window_end=pin.outputs["window_end"], days_back=days_back, bq_project=bq_project,
        bq_location=bq_location, bq_staging_dataset=bq_staging_dataset, memory_budget=memory_budget,
    ), "extract")
    extracted.set_display_name("extract-features").set_caching_options(True)
    extracted.set_retry(num_retries=2, backoff_duration="60s", backoff_factor=2.0)
    features = extracted.outputs["features"]

    c2v = _size(fit_cat2vec(features=features, valid_from=valid_from, seed=seed, memory_budget=memory_budget), "cat2vec")
    c2v.set_display_name("fit-cat2vec")

    tuned = _size(tune_params(features=features, cat2vec=c2v.outputs["cat2vec"], valid_from=valid_from,
                              max_evals=max_evals, seed=seed, memory_budget=memory_budget, trainer=trainer), "tune")
    tuned.set_display_name("tune-hyperopt")

    trained = _size(train_model(
        features=features, cat2vec=c2v.outputs["cat2vec"], params=tuned.outputs["params"], trainer=trainer,
        runtime=runtime, valid_from=valid_from, seed=seed, spark_executors=spark_executors,
        spark_executor_memory=spark_executor_memory, namespace=namespace, memory_budget=memory_budget,
    ), "train")
    trained.set_display_name("train").set_retry(num_retries=1, backoff_duration="120s")
    trained.set_env_variable(images.override_env("attribution-spark"), images.SPARK_IMAGE)  # what was built

    evaluated = _size(evaluate_model(features=features, model=trained.outputs["model"], memory_budget=memory_budget), "evaluate")
    evaluated.set_display_name("evaluate")

    live = _size(record_live_metrics(metrics=evaluated.outputs["metrics"], live_metrics_uri=live_metrics_uri), "live")
    live.set_display_name("record-live-metrics").set_caching_options(False)

    deployed = _size(deploy_model(
        model=trained.outputs["model"], features=features, metrics=evaluated.outputs["metrics"],
        min_roc_auc=min_roc_auc, min_pr_auc=min_pr_auc, deployed_model_uri=deployed_model_uri, runtime=runtime,
        namespace=namespace, canary_traffic_percent=canary_traffic_percent, memory_budget=memory_budget,
    ), "deploy")
    deployed.set_display_name("deploy-gate").set_caching_options(False)
    deployed.set_retry(num_retries=3, backoff_duration="30s", backoff_factor=2.0)

    return Outputs(features=features, model=trained.outputs["model"], metrics=evaluated.outputs["metrics"],
                   report=evaluated.outputs["report"], decision=deployed.outputs["decision"])


def compile_pipeline(path=YAML_PATH) -> Path:
    compiler.Compiler().compile(attribution_pipeline, str(path))
    return Path(path)
