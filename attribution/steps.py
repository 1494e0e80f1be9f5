"""One plain, typed function per pipeline step: the KFP components (components/) only import one of these,
call it with their artifacts' paths and URIs, and copy the returned metadata onto their outputs. Every
branch lives here, so it is tested without KFP (tests/test_steps.py).

Each step returns a flat dict of JSON scalars (and small lists) for the output artifact's metadata.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attribution.features.compute import ENGINES

log = logging.getLogger(__name__)
TRAINERS = ("xgboost", "spark")
RUNTIMES = ("kubernetes", "local")
FILE_ENGINES = tuple(e for e in ENGINES if e != "online")
METADATA_FILE = "metadata.json"


def configure_logging() -> None:
    """The components' one log format (KFP shows the task's stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# ---- step 0: what pins the input ----------------------------------------------------------------------
@dataclass(frozen=True)
class InputWindow:
    cache_token: str
    window_end: str


def resolve_input(snapshot_date: str, run_id: str) -> InputWindow:
    """With a snapshot_date the cache token is that date (the extraction can be cached); without one it is
    the run's id (never cached). The window's end is fixed once per run, so retries keep it."""
    from attribution.features.bigquery import window_end

    token = f"snapshot:{snapshot_date}" if snapshot_date else f"run:{run_id}"
    return InputWindow(token, window_end(snapshot_date))


# ---- step 1: clicks -> features -----------------------------------------------------------------------
def staging_table(project: str, dataset: str, window_end: str, output_uri: str) -> str:
    """The BigQuery destination of one extraction: per window and per output, so retries overwrite their
    own table and concurrent runs never share one."""
    return f"{project}.{dataset}.features_{window_end.replace('-', '')}_{zlib.crc32(output_uri.encode()):08x}"


def extract_features(
    data: str, engine: str, output_path: str, output_uri: str, window_end: str = "", days_back: int = 0,
    bq_project: str = "", bq_location: str = "US", bq_staging_dataset: str = "attribution_staging",
    bq_client: Any = None,
) -> dict:
    """`bigquery`: a query job over the table `data` into a staging table, exported as Parquet into
    output_uri (gs://). The file engines: the click file `data` through features.build into output_path."""
    if engine == "bigquery":
        from attribution.features import bigquery as bq

        if not output_uri.startswith("gs://"):
            raise ValueError(f"the bigquery engine exports to GCS; this run's pipeline root gives {output_uri}")
        end = window_end or bq.window_end()
        span = bq.time_range(end, days_back)
        project = bq_project or data.split(".")[0]
        jobs = bq.build_feature_jobs(
            data, staging_table(project, bq_staging_dataset, end, output_uri), output_uri.rstrip("/") + "/part-*.parquet",
            start=span[0] if span else None, end=span[1] if span else None, location=bq_location,
        )
        if bq_client is None:
            from google.cloud import bigquery

            bq_client = bigquery.Client(project=project, location=bq_location)
        summary = bq.run_feature_jobs(bq_client, jobs)
        return {**summary, "engine": engine, "source": data, "time_range": [str(s) for s in span] if span else None}
    if engine not in FILE_ENGINES:
        raise ValueError(f"feature_engine must be 'bigquery' or one of {FILE_ENGINES}, got {engine!r}")
    from attribution.features.build import build_features_file

    os.makedirs(output_path, exist_ok=True)
    summary = build_features_file(data, os.path.join(output_path, "features.parquet"), engine=engine, progress=False)
    log.info("%s", summary)
    return {"engine": engine, "source": data, "rows": summary.rows, "seconds": round(summary.seconds, 2)}


# ---- step 2: Cat2Vec ----------------------------------------------------------------------------------
def fit_cat2vec(features_path: str, output_path: str, valid_from: str = "", seed: int = 0) -> dict:
    """Cat2Vec vectors fitted on the training window only, saved as arrays (no pickle)."""
    from attribution.training.fit import fit_cat2vec_file

    summary = fit_cat2vec_file(features_path, output_path, valid_from or None, seed)
    return {**summary, "framework": "gensim-word2vec"}


# ---- step 3: Hyperopt ---------------------------------------------------------------------------------
def tune_params(
    features_path: str, cat2vec_path: str, params_path: str, valid_from: str = "", max_evals: int = 0, seed: int = 0
) -> dict:
    """params.json ({"params", "trials", ...}) from Hyperopt TPE on the inner time split; max_evals 0 = the
    defaults. Returns the numeric parameters and max_evals."""
    from attribution.training.tune import tune_file

    doc = tune_file(features_path, valid_from or None, max_evals, seed, cat2vec_dir=cat2vec_path)
    Path(params_path).write_text(json.dumps(doc, indent=2, default=str))
    return {"max_evals": max_evals, **{k: v for k, v in doc["params"].items() if isinstance(v, (int, float))}}


# ---- step 4: the model --------------------------------------------------------------------------------
def train_model(
    features_path: str, features_uri: str, cat2vec_path: str, params_path: str, model_path: str, model_uri: str,
    trainer: str = "xgboost", runtime: str = "kubernetes", valid_from: str = "", seed: int = 0,
    spark_executors: int = 2, spark_executor_memory: str = "8g", namespace: str = "attribution",
    kube_apis: tuple[Any, Any] | None = None, spark_poll_s: float = 15.0,
) -> dict:
    """`xgboost`: training.train in this process. `spark`: on Kubernetes the SparkApplication is submitted
    (it writes to model_uri) and awaited; locally the same entry point runs with a local master. Returns the
    trainer, spec hash, valid_from and holdout metrics of the model's metadata.json."""
    if trainer not in TRAINERS:
        raise ValueError(f"trainer must be one of {TRAINERS}, got {trainer!r}")
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    tuned = json.loads(Path(params_path).read_text())["params"]
    extra: dict = {}
    if trainer == "spark":
        from attribution.platform import spark_submit

        tuned_args = ["--params", json.dumps(tuned)]  # the tuning step's choice reaches Spark too
        if runtime == "kubernetes":
            doc = spark_submit.render_spark_application(
                features_uri, model_uri, valid_from or None, executor_instances=spark_executors,
                executor_memory=spark_executor_memory, namespace=namespace, extra_arguments=tuned_args,
                owner=spark_submit.step_pod_owner(),
            )
            result = spark_submit.submit_and_wait(doc, *(kube_apis or ()), poll_s=spark_poll_s)
            extra = {"spark_application": result.name, "spark_state": result.state}
        else:
            spark_submit.run_local(features_path, model_path, valid_from or None, extra_arguments=tuned_args)
    else:
        from attribution.training.config import TrainConfig
        from attribution.training.train import train

        cfg = TrainConfig(trainer="xgboost", valid_from=valid_from or None, seed=seed, params=tuned,
                          ablation=False, cat2vec_dir=cat2vec_path)
        train(features_path, model_path, cfg)
    metadata = json.loads(read_model_file(model_path, model_uri, METADATA_FILE))
    return {"framework": "xgboost", "trainer": trainer, **extra, **model_summary(metadata)}


def read_model_file(model_path: str, model_uri: str, name: str) -> str:
    """A file of the model directory: at model_path when this task wrote it, else at model_uri (a Spark
    job on Kubernetes writes straight to gs://)."""
    from attribution import storage

    if model_path and os.path.isfile(os.path.join(model_path, name)):
        return storage.read_text(os.path.join(model_path, name))
    return storage.read_text(storage.join(model_uri, name))


def model_summary(metadata: dict) -> dict:
    """What the Model artifact shows of metadata.json: spec hash, valid_from, finite holdout metrics."""
    out = {"feature_spec_hash": metadata.get("feature_spec_hash"), "valid_from": metadata.get("valid_from")}
    for key, value in (metadata.get("holdout_metrics") or {}).items():
        if isinstance(value, (int, float)) and not math.isnan(value):
            out[f"holdout_{key}"] = value
    return out


# ---- step 5: evaluation -------------------------------------------------------------------------------
SCALAR_METRICS = ("roc_auc", "pr_auc", "log_loss", "ece", "rows", "positives", "bayes_roc_auc")


@dataclass
class Evaluation:
    scalars: dict[str, float]  # finite headline numbers, for Metrics.log_metric
    roc: tuple[list[float], list[float], list[float]]  # fpr, tpr, thresholds (capped at 1 for KFP)
    confusion: tuple[list[str], list[list[int]]]  # categories, matrix


def evaluate_model(model_path: str, features_path: str, metrics_path: str, report_path: str, from_ts: str = "") -> Evaluation:
    """metrics.json and the HTML report on the holdout (clicks from the model's valid_from on)."""
    import shutil
    import tempfile

    from attribution.evaluation.evaluate import METRICS_FILE, REPORT_FILE, evaluate

    with tempfile.TemporaryDirectory() as out:
        result = evaluate(model_path, features_path, out, from_ts=from_ts or None)
        for name, target in ((METRICS_FILE, metrics_path), (REPORT_FILE, report_path)):
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            shutil.copyfile(os.path.join(out, name), target)
    scalars = {k: float(v) for k in SCALAR_METRICS if isinstance(v := result.get(k), (int, float))
               and not (isinstance(v, float) and math.isnan(v))}
    roc, cm = result["roc_curve"], result["confusion_matrix"]
    return Evaluation(
        scalars,
        ([float(x) for x in roc["fpr"]], [float(x) for x in roc["tpr"]], [min(1.0, float(t)) for t in roc["thresholds"]]),
        (list(cm["categories"]), [[int(v) for v in row] for row in cm["matrix"]]),
    )


# ---- step 6: the deploy gate --------------------------------------------------------------------------
def deploy_model(
    model_uri: str, features_uri: str, metrics_path: str, decision_path: str, min_roc_auc: float,
    min_pr_auc: float, deployed_model_uri: str = "", runtime: str = "kubernetes", namespace: str = "attribution",
    canary_percent: int = 10, api: Any = None, ready_timeout_s: float = 600.0, poll_s: float = 10.0,
) -> dict:
    """Deploys only when the candidate reaches the thresholds and is not worse than the deployed model, both
    scored on the same holdout rows (the evaluated clicks of features_uri): `kubernetes` rolls the
    InferenceService out as a canary, `local` writes the manifest it would apply."""
    from attribution.evaluation.compare import Holdout
    from attribution.platform.deploy import deploy_gate

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    evaluated = json.loads(Path(metrics_path).read_text())
    valid_from = evaluated.get("from_ts") or json.loads(read_model_file("", model_uri, METADATA_FILE)).get("valid_from")
    holdout = Holdout.load(features_uri, valid_from)
    record = deploy_gate(
        model_uri, holdout.score, deployed_model_uri=deployed_model_uri, min_roc_auc=min_roc_auc,
        min_pr_auc=min_pr_auc, target="kubernetes" if runtime == "kubernetes" else "manifest", namespace=namespace,
        output_dir=decision_path, api=api, canary_percent=canary_percent, ready_timeout_s=ready_timeout_s,
        poll_s=poll_s,
    )
    log.info("%s", json.dumps(record.to_dict(), indent=2))
    return {"deployed": record.deployed, "reasons": record.reasons, "action": record.action or "",
            **{f"candidate_{k}": v for k, v in record.candidate.items() if v is not None},
            **{f"deployed_{k}": v for k, v in (record.deployed_metrics or {}).items() if v is not None}}
