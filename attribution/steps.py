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
# What every step may use, unless its container's memory limit is lower: the pipeline's memory_budget.
DEFAULT_MEMORY_BUDGET = "16GiB"
AUTO_BUDGET_SHARE = 0.75  # memory_budget=auto: this share of the container's limit (the rest: interpreter, libraries)
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def configure_logging() -> None:
    """The components' one log format (KFP shows the task's stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def container_memory_limit() -> int | None:
    """The memory limit of this container (cgroup v2, else v1), None when unlimited."""
    for path in CGROUP_LIMITS:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 writes a huge number for "unlimited"
            return int(text)
    return None


def memory_budget_bytes(memory_budget: str) -> int:
    """The step's budget in bytes: a size ("16GiB", "512MB"), or "auto" for AUTO_BUDGET_SHARE of the
    container's limit. Never more than that share of the limit: a budget set for a bigger task cannot
    push a smaller one into the OOM killer."""
    from attribution.features.out_of_core import parse_memory

    limit = container_memory_limit()
    ceiling = int(limit * AUTO_BUDGET_SHARE) if limit else None
    if memory_budget.strip().lower() == "auto":
        if ceiling is None:
            raise ValueError("memory_budget=auto needs a container memory limit; give a size such as 16GiB")
        return ceiling
    budget = parse_memory(memory_budget)
    if ceiling is not None and budget > ceiling:
        log.warning("memory_budget %s is above %.0f%% of this container's limit: using %d MiB",
                    memory_budget, 100 * AUTO_BUDGET_SHARE, ceiling // 2**20)
        return ceiling
    return budget


def _gib(n: int) -> float:
    return round(n / 2**30, 3)


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
    bq_client: Any = None, memory_budget: str = DEFAULT_MEMORY_BUDGET,
) -> dict:
    """`bigquery`: a query job over the table `data` into a staging table, exported as Parquet into
    output_uri (gs://). The file engines: the click file `data` through features.build into output_path,
    in memory when the whole input fits memory_budget, else out of core within it (time chunks, the
    vectorized kernel: the same features, as every engine gives)."""
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
    from attribution.features.build import BUILD_BYTES_PER_ROW, build_features_file, fits_in_memory

    os.makedirs(output_path, exist_ok=True)
    budget = memory_budget_bytes(memory_budget)
    in_memory = fits_in_memory(data, budget, BUILD_BYTES_PER_ROW)
    summary = build_features_file(data, os.path.join(output_path, "features.parquet"), engine=engine, progress=False,
                                  memory_limit=None if in_memory else f"{budget}B")
    log.info("%s", summary)
    return {"engine": summary.engine, "source": data, "rows": summary.rows, "seconds": round(summary.seconds, 2),
            "out_of_core": not in_memory, "memory_budget_gib": _gib(budget)}


# ---- step 2: Cat2Vec ----------------------------------------------------------------------------------
def fit_cat2vec(
    features_path: str, output_path: str, valid_from: str = "", seed: int = 0, memory_budget: str = DEFAULT_MEMORY_BUDGET
) -> dict:
    """Cat2Vec vectors fitted on the training window only, saved as arrays (no pickle): from the whole
    features file when it fits memory_budget, else from a sample kept while streaming it."""
    from attribution.features.build import fits_in_memory
    from attribution.training.fit import fit_cat2vec_file
    from attribution.training.large import fit_cat2vec_sampled

    budget = memory_budget_bytes(memory_budget)
    sampled = not fits_in_memory(features_path, budget)
    if sampled:
        summary = fit_cat2vec_sampled(features_path, output_path, valid_from or None, seed, budget)
    else:
        summary = fit_cat2vec_file(features_path, output_path, valid_from or None, seed)
    return {**summary, "framework": "gensim-word2vec", "sampled": sampled, "memory_budget_gib": _gib(budget)}


# ---- step 3: Hyperopt ---------------------------------------------------------------------------------
def tune_params(
    features_path: str, cat2vec_path: str, params_path: str, valid_from: str = "", max_evals: int = 0, seed: int = 0,
    memory_budget: str = DEFAULT_MEMORY_BUDGET,
    trainer: str = "xgboost",
) -> dict:
    """params.json ({"params", "trials", ...}) from Hyperopt TPE on the inner time split; max_evals 0 = the
    defaults. A features file larger than memory_budget is tuned on a capped sample (all positives and
    seeded negatives, training.large.TUNE_MAX_ROWS at most). Returns the numeric parameters and max_evals."""
    from attribution.features.build import fits_in_memory
    from attribution.training.large import tune_sampled
    from attribution.training.tune import tune_file

    budget = memory_budget_bytes(memory_budget)
    sampled = max_evals > 0 and not fits_in_memory(features_path, budget)
    if sampled:
        doc = tune_sampled(features_path, valid_from or None, max_evals, seed, cat2vec_path, budget, trainer=trainer)
    else:
        doc = tune_file(features_path, valid_from or None, max_evals, seed, cat2vec_dir=cat2vec_path, trainer=trainer)
    Path(params_path).write_text(json.dumps(doc, indent=2, default=str))
    return {"max_evals": max_evals, "sampled": sampled, "memory_budget_gib": _gib(budget),
            **{k: v for k, v in doc["params"].items() if isinstance(v, (int, float))}}


# ---- step 4: the model --------------------------------------------------------------------------------
def train_model(
    features_path: str, features_uri: str, cat2vec_path: str, params_path: str, model_path: str, model_uri: str,
    trainer: str = "xgboost", runtime: str = "kubernetes", valid_from: str = "", seed: int = 0,
    spark_executors: int = 2, spark_executor_memory: str = "8g", namespace: str = "attribution",
    kube_apis: tuple[Any, Any] | None = None, spark_poll_s: float = 15.0, memory_budget: str = DEFAULT_MEMORY_BUDGET,
    cat2vec_uri: str = "",
) -> dict:
    """`xgboost`: training.train in this process, or the streaming trainer within memory_budget when the
    features file does not fit it. `spark`: on Kubernetes the SparkApplication is submitted
    (it writes to model_uri, and reads the Cat2Vec step's vectors at cat2vec_uri) and awaited; locally the same
    entry point runs with a local master. Either way Spark uses the pipeline's Cat2Vec vectors, as the tuning
    step did. Returns the trainer, spec hash, valid_from and holdout metrics of the model's metadata.json."""
    if trainer not in TRAINERS:
        raise ValueError(f"trainer must be one of {TRAINERS}, got {trainer!r}")
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    tuned = json.loads(Path(params_path).read_text())["params"]
    extra: dict = {}
    if trainer == "spark":
        from attribution.platform import spark_submit
        from attribution.training.large import default_cut

        # the holdout the Cat2Vec and tuning steps left out, not Spark's estimate of it
        valid_from = valid_from or default_cut(features_path)
        tuned_args = ["--params", json.dumps(tuned)]  # the tuning step's choice reaches Spark too
        if runtime == "kubernetes":
            if not cat2vec_uri:
                raise ValueError("a SparkApplication reads the Cat2Vec step's vectors from their URI: cat2vec_uri is empty")
            doc = spark_submit.render_spark_application(
                features_uri, model_uri, valid_from or None, executor_instances=spark_executors,
                executor_memory=spark_executor_memory, namespace=namespace,
                extra_arguments=[*tuned_args, "--cat2vec-dir", cat2vec_uri],
                owner=spark_submit.step_pod_owner(),
            )
            result = spark_submit.submit_and_wait(doc, *(kube_apis or ()), poll_s=spark_poll_s)
            extra = {"spark_application": result.name, "spark_state": result.state}
        else:
            spark_submit.run_local(features_path, model_path, valid_from or None,
                                   extra_arguments=[*tuned_args, "--cat2vec-dir", cat2vec_path])
    else:
        from attribution.features.build import fits_in_memory
        from attribution.training.config import TrainConfig
        from attribution.training.large import train_large
        from attribution.training.train import train

        cfg = TrainConfig(trainer="xgboost", valid_from=valid_from or None, seed=seed, params=tuned,
                          ablation=False, cat2vec_dir=cat2vec_path)
        budget = memory_budget_bytes(memory_budget)
        if fits_in_memory(features_path, budget):
            train(features_path, model_path, cfg)
        else:
            train_large(features_path, model_path, cfg, progress=False, memory_budget=budget)
            extra = {"streaming": True, "memory_budget_gib": _gib(budget)}
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


def evaluate_model(
    model_path: str, features_path: str, metrics_path: str, report_path: str, from_ts: str = "",
    memory_budget: str = DEFAULT_MEMORY_BUDGET,
) -> Evaluation:
    """metrics.json and the HTML report on the holdout (clicks from the model's valid_from on), the
    features scanned in batches sized by memory_budget."""
    import shutil
    import tempfile

    from attribution.evaluation.evaluate import METRICS_FILE, REPORT_FILE, evaluate

    with tempfile.TemporaryDirectory() as out:
        result = evaluate(model_path, features_path, out, from_ts=from_ts or None,
                          memory_budget=memory_budget_bytes(memory_budget))
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
    memory_budget: str = DEFAULT_MEMORY_BUDGET,
) -> dict:
    """Deploys only when the candidate reaches the thresholds and is not worse than the deployed model, both
    scored on the same holdout rows (the evaluated clicks of features_uri, streamed in batches when the
    file does not fit memory_budget): `kubernetes` rolls the InferenceService out as a canary, `local`
    writes the manifest it would apply."""
    from attribution.evaluation.compare import Holdout
    from attribution.platform.deploy import deploy_gate

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    evaluated = json.loads(Path(metrics_path).read_text())
    valid_from = evaluated.get("from_ts") or json.loads(read_model_file("", model_uri, METADATA_FILE)).get("valid_from")
    holdout = Holdout.load(features_uri, valid_from, memory_budget_bytes(memory_budget))
    record = deploy_gate(
        model_uri, holdout.scorer(evaluated, model_uri), deployed_model_uri=deployed_model_uri, min_roc_auc=min_roc_auc,
        min_pr_auc=min_pr_auc, target="kubernetes" if runtime == "kubernetes" else "manifest", namespace=namespace,
        output_dir=decision_path, api=api, canary_percent=canary_percent, ready_timeout_s=ready_timeout_s,
        poll_s=poll_s,
    )
    log.info("%s", json.dumps(record.to_dict(), indent=2))
    return {"deployed": record.deployed, "reasons": record.reasons, "action": record.action or "",
            **{f"candidate_{k}": v for k, v in record.candidate.items() if v is not None},
            **{f"deployed_{k}": v for k, v in (record.deployed_metrics or {}).items() if v is not None}}


# ---- step 7: the live figures beside the candidate's holdout figures ------------------------------------
LIVE_KEYS = ("roc_auc", "pr_auc", "log_loss", "labelled", "positives")


def record_live_metrics(metrics_path: str, live_metrics_uri: str, output_path: str) -> dict:
    """The serving model's live quality (a live_metrics.json written by `attribution monitor`, at a path or
    gs://, or the monitor service's http(s)://.../v1/metrics) beside this run's holdout metrics, in one
    document. Without a URI, or when it cannot be read, the record says why and the run goes on: the live
    figures are evidence to compare with, not a gate."""
    holdout = json.loads(Path(metrics_path).read_text())
    live, reason = None, "no live_metrics_uri given"
    if live_metrics_uri:
        try:
            if live_metrics_uri.startswith(("http://", "https://")):
                import requests

                resp = requests.get(live_metrics_uri, timeout=60)
                resp.raise_for_status()
                live = resp.json()
            else:
                from attribution.platform.deploy import read_text

                live = json.loads(read_text(live_metrics_uri))
            reason = f"read from {live_metrics_uri}"
        except Exception as err:  # noqa: BLE001 - unreadable evidence is recorded, not fatal
            reason = f"could not read {live_metrics_uri}: {type(err).__name__}: {err}"
            log.warning("live metrics: %s", reason)
    out: dict[str, Any] = {"live_available": live is not None, "live_source": reason}
    for key in ("roc_auc", "pr_auc", "log_loss"):
        if isinstance(holdout.get(key), (int, float)):
            out[f"holdout_{key}"] = float(holdout[key])
    if live is not None:
        for key in LIVE_KEYS:
            if isinstance(live.get(key), (int, float)):
                out[f"live_{key}"] = live[key]
        ratio = (live.get("calibration") or {}).get("ratio")
        if isinstance(ratio, (int, float)):
            out["live_calibration_ratio"] = ratio
        if "live_roc_auc" in out and "holdout_roc_auc" in out:
            out["roc_auc_holdout_minus_live"] = out["holdout_roc_auc"] - out["live_roc_auc"]
    os.makedirs(os.path.dirname(output_path) or ".", exist_ok=True)
    document = {**out, "holdout": holdout if live is None else {k: holdout.get(k) for k in ("roc_auc", "pr_auc", "log_loss")},
                "live": live and {k: live.get(k) for k in (*LIVE_KEYS, "clicks", "calibration", "as_of", "models")}}
    Path(output_path).write_text(json.dumps(document, indent=2, default=str))
    log.info("live beside holdout: %s", json.dumps(out))
    return out
