"""`attribution run --cloud emulated`: the pipeline with the cluster's semantics, on this machine.

GCS (fake-gcs-server) and BigQuery (bqemulator) run on loopback (attribution.platform.emulators); the
pipeline root and the model bucket are gs://; every step is the same `attribution.steps` function the KFP
component calls, with the KFP launcher's contract: outputs have a gs:// URI under the pipeline root and a
local path that is uploaded after the step, inputs are downloaded from their URI before it. Then:

- `--feature-engine bigquery`: the clicks are loaded into a partitioned table through a load job, the
  feature SQL runs as CREATE TABLE ... AS, EXPORT DATA writes Parquet to the step's gs:// URI;
- `--trainer spark`: the step renders and submits its SparkApplication to the recording Kubernetes API,
  whose emulated operator runs it from the document (its mainApplicationFile, arguments and driver env,
  with a local master), reading and writing gs://;
- the deploy gate reads the live InferenceService from that API, scores the live model (gs://) and the
  candidate on the same holdout rows, and applies the InferenceService; the emulated KServe controller
  marks a revision Ready only when its storageUri holds a model that loads (the storage initializer's job).

The recorded API keeps its objects in OUTPUT/emulated/kubernetes.json and GCS its objects under
OUTPUT/emulated/gcs, so a second run into the same OUTPUT compares against the first one's model.

    OUTPUT/run.json        model_uri, pipeline_root, decision (candidate and deployed metrics), ...
    OUTPUT/metrics.json    OUTPUT/report.html    OUTPUT/deploy/decision.json
    OUTPUT/emulated/       the emulators' state and logs, kube_calls.json (every Kubernetes API call)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attribution.steps import DEFAULT_MEMORY_BUDGET

log = logging.getLogger(__name__)
PROJECT = "attribution-emulated"
PIPELINE_BUCKET, MODEL_BUCKET, DATA_BUCKET = "attribution-pipeline", "attribution-models", "attribution-data"
CLICK_DATASET, STAGING_DATASET = "attribution", "attribution_staging"
NAMESPACE = "attribution"
SPARK_MASTER = "local[2]"
REPO = Path(__file__).resolve().parents[1]
MAIN_FILE_PREFIX = "local:///app/"  # images/spark.Dockerfile puts the source under /app


# ---- the KFP launcher's contract ----------------------------------------------------------------------------
@dataclass
class Artifact:
    uri: str  # gs:// under the pipeline root
    path: str  # the task's local copy


class Launcher:
    """Artifacts of one run: an output's local path is uploaded to its URI after its step; an input is a
    fresh download of its URI (as each KFP task downloads its own inputs)."""

    def __init__(self, root_uri: str, stage: Path):
        self.root_uri, self.stage = root_uri.rstrip("/"), stage

    def output(self, task: str, name: str) -> Artifact:
        path = self.stage / "outputs" / task / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return Artifact(f"{self.root_uri}/{task}/{name}", str(path))

    def upload(self, artifact: Artifact) -> None:
        from attribution import storage

        p = Path(artifact.path)
        if p.is_dir() and any(p.iterdir()):
            storage.upload_dir(p, artifact.uri)
        elif p.is_file():
            fs, target = storage.filesystem(artifact.uri)
            fs.put_file(str(p), target)

    def input(self, task: str, artifact: Artifact) -> str:
        """artifact's URI downloaded for `task`: a folder, or the file when the URI is one object."""
        from attribution import storage

        target = self.stage / "inputs" / task / Path(artifact.path).name
        fs, path = storage.filesystem(artifact.uri)
        if fs.isfile(path):
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(target))
        else:
            storage.download_dir(artifact.uri, target)
        return str(target)


# ---- the emulated operators ---------------------------------------------------------------------------------------
def spark_command(doc: dict) -> list[str]:
    """The driver's command from the SparkApplication: its Python mainApplicationFile and arguments."""
    spec = doc["spec"]
    main = spec["mainApplicationFile"]
    if spec.get("type") != "Python" or not main.startswith(MAIN_FILE_PREFIX):
        raise ValueError(f"the emulated operator runs Python applications under {MAIN_FILE_PREFIX}, got {main!r}")
    path = REPO / main.removeprefix(MAIN_FILE_PREFIX)
    if not path.is_file():
        raise FileNotFoundError(f"mainApplicationFile {main} is {path}, which does not exist")
    return [sys.executable, str(path), *map(str, spec.get("arguments") or [])]


class Controllers:
    """What the Spark Operator and KServe do with the objects the recording API stores."""

    def __init__(self, logs: dict[str, str], log_dir: Path, extra_env: dict[str, str]):
        self.logs, self.log_dir, self.extra_env = logs, log_dir, extra_env

    def on_write(self, obj: dict) -> None:
        kind = obj.get("kind")
        if kind == "SparkApplication" and not (obj.get("status") or {}).get("applicationState"):
            self.run_spark(obj)
        elif kind == "InferenceService":
            self.reconcile_inference_service(obj)

    def run_spark(self, obj: dict) -> None:
        """Run the application to its end (the step polls afterwards and finds the final state)."""
        name = obj["metadata"]["name"]
        driver_env = {e["name"]: str(e.get("value", "")) for e in obj["spec"]["driver"].get("env") or [] if "value" in e}
        env = {**os.environ, **self.extra_env, **driver_env, "SPARK_MASTER": SPARK_MASTER}
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        env.setdefault("PYSPARK_PYTHON", sys.executable)
        pod = f"{name}-driver"
        log_path = self.log_dir / f"{pod}.log"
        log.info("emulated Spark Operator: running %s with master %s (log %s)", name, SPARK_MASTER, log_path)
        try:
            cmd = spark_command(obj)
            with open(log_path, "w") as out:
                proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=3600)
            state, error = ("COMPLETED", None) if proc.returncode == 0 else ("FAILED", f"driver exited {proc.returncode}")
        except (ValueError, FileNotFoundError, subprocess.TimeoutExpired) as err:
            state, error = "SUBMISSION_FAILED", str(err)
            log_path.write_text(str(err))
        self.logs[pod] = log_path.read_text()[-20_000:]
        obj["status"] = {"applicationState": {"state": state, **({"errorMessage": error} if error else {})},
                         "driverInfo": {"podName": pod}}

    def reconcile_inference_service(self, obj: dict) -> None:
        """A new revision per spec generation, Ready when its storageUri loads as a model."""
        from attribution.model.bundle import ModelLoadError, load_model
        from attribution.platform.deploy import storage_uri_of

        generation = int(obj["metadata"]["generation"])
        status = obj.setdefault("status", {})
        if int(status.get("observedGeneration") or 0) >= generation:
            return
        uri = storage_uri_of(obj)
        revision = f"{obj['metadata']['name']}-predictor-{generation:05d}"
        try:
            load_model(uri)
            ok, message = True, f"loaded {uri}"
        except (FileNotFoundError, ModelLoadError, OSError, ValueError) as err:
            ok, message = False, f"storage initializer: {uri}: {err}"
        predictor = status.setdefault("components", {}).setdefault("predictor", {})
        predictor["latestCreatedRevision"] = revision
        if ok:
            predictor["latestReadyRevision"] = revision
        status["observedGeneration"] = generation
        status["conditions"] = [{"type": "Ready", "status": "True" if ok else "False", "message": message,
                                 **({} if ok else {"reason": "RevisionFailed"})}]


# ---- the data ------------------------------------------------------------------------------------------------------
def upload_click_table(local_clicks: str, uri: str) -> int:
    """The click file as the BigQuery load job reads it (CLICK_TABLE_SCHEMA: TIMESTAMP times, row_id)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from attribution import storage
    from attribution.features.bigquery import CLICK_TABLE_SCHEMA
    from attribution.io import read_clicks

    clicks = read_clicks(local_clicks)
    frame = pd.DataFrame({name: clicks[name] for name, _, _ in CLICK_TABLE_SCHEMA if name in clicks})
    for col in ("click_time", "attributed_time"):
        if col in frame:
            frame[col] = pd.to_datetime(frame[col], unit="s", utc=True)
    types = {"INT64": pa.int64(), "TIMESTAMP": pa.timestamp("us", tz="UTC")}
    schema = pa.schema([pa.field(n, types[t], nullable=m != "REQUIRED") for n, t, m in CLICK_TABLE_SCHEMA if n in frame])
    fs, path = storage.filesystem(uri)
    with fs.open(path, "wb") as f:
        pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), f)
    return len(frame)


def load_clicks_into_bigquery(client: Any, uri: str, table: str) -> int:
    from attribution.features.bigquery import build_click_table_load

    for dataset in (CLICK_DATASET, STAGING_DATASET):
        client.create_dataset(f"{PROJECT}.{dataset}", exists_ok=True)
    ref, uris, config = build_click_table_load([uri], table)
    client.load_table_from_uri(uris, ref, job_config=config).result()
    rows = int(client.get_table(ref).num_rows or 0)
    log.info("loaded %d clicks from %s into %s", rows, uri, table)
    return rows


def ensure_buckets(names: tuple[str, ...]) -> None:
    from attribution import storage

    for name in names:
        fs, _ = storage.filesystem(f"gs://{name}")
        if not fs.exists(name):
            fs.mkdir(name)


# ---- the run -------------------------------------------------------------------------------------------------------
def run_emulated(
    output: str | Path = "out/run", data: str | None = None, rows: int | None = 300_000, valid_from: str | None = None,
    max_evals: int = 0, seed: int = 0, feature_engine: str = "bigquery", trainer: str = "xgboost",
    min_roc_auc: float = 0.9, min_pr_auc: float = 0.05, canary_percent: int = 10,
    memory_budget: str | None = None,
) -> dict:
    """One pipeline run against the emulated cloud (module doc); returns (and writes) OUTPUT/run.json."""
    from attribution import steps
    from attribution.platform import emulators
    from attribution.platform.kube_recording import RecordingCoreV1, RecordingCustomObjects
    from pipelines import PIPELINE_NAME
    from pipelines.local_run import generate_clicks

    emulators.check_gcsfs_not_imported()
    out = Path(output).resolve()
    state = out / "emulated"
    state.mkdir(parents=True, exist_ok=True)
    budget = memory_budget or DEFAULT_MEMORY_BUDGET
    t0 = time.perf_counter()
    if data is None:
        cached = out / "input" / f"clicks-{rows}-{seed}.parquet"
        data = str(cached if cached.is_file() else generate_clicks(int(rows or 300_000), seed, cached))
    run_id = f"{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    with emulators.cloud_emulators(state, PROJECT) as cloud, tempfile.TemporaryDirectory(prefix="launcher-") as stage:
        os.environ.update(cloud.env)  # gcsfs (imported from here on) and the Spark driver read these
        ensure_buckets((PIPELINE_BUCKET, MODEL_BUCKET, DATA_BUCKET))
        root = f"gs://{PIPELINE_BUCKET}/{PIPELINE_NAME}/{run_id}"
        launcher = Launcher(root, Path(stage))
        logs: dict[str, str] = {}
        controllers = Controllers(logs, state, cloud.env)
        custom = RecordingCustomObjects(on_write=controllers.on_write, state_file=state / "kubernetes.json")
        core = RecordingCoreV1(logs)
        client = cloud.bigquery_client(PROJECT)

        window = steps.resolve_input("", run_id)
        features = launcher.output("extract-features", "features")
        if feature_engine == "bigquery":
            clicks_uri = f"gs://{DATA_BUCKET}/clicks/{run_id}.parquet"
            upload_click_table(data, clicks_uri)
            source = f"{PROJECT}.{CLICK_DATASET}.clicks"
            load_clicks_into_bigquery(client, clicks_uri, source)
            extracted = steps.extract_features(source, "bigquery", features.path, features.uri, window.window_end, 0,
                                               PROJECT, "US", STAGING_DATASET, bq_client=client, memory_budget=budget)
        else:
            extracted = steps.extract_features(data, feature_engine, features.path, features.uri, memory_budget=budget)
        launcher.upload(features)

        cat2vec = launcher.output("fit-cat2vec", "cat2vec")
        steps.fit_cat2vec(launcher.input("fit-cat2vec", features), cat2vec.path, valid_from or "", seed, budget)
        launcher.upload(cat2vec)

        params = launcher.output("tune-params", "params")
        steps.tune_params(launcher.input("tune-params", features), launcher.input("tune-params", cat2vec), params.path,
                          valid_from or "", max_evals, seed, budget, trainer)
        launcher.upload(params)

        # The model bucket, as the pipeline's Model artifact would sit under a gs:// pipeline root.
        model = launcher.output("train-model", "model")
        model.uri = f"gs://{MODEL_BUCKET}/attribution/{run_id}"
        trained = steps.train_model(
            launcher.input("train-model", features), features.uri, launcher.input("train-model", cat2vec),
            launcher.input("train-model", params), model.path, model.uri, trainer, "kubernetes", valid_from or "", seed,
            spark_executors=1, namespace=NAMESPACE, kube_apis=(custom, core), spark_poll_s=0.2, memory_budget=budget,
            cat2vec_uri=cat2vec.uri,
        )
        launcher.upload(model)

        metrics = launcher.output("evaluate-model", "metrics")
        report = launcher.output("evaluate-model", "report")
        evaluation = steps.evaluate_model(launcher.input("evaluate-model", model), launcher.input("evaluate-model", features),
                                          metrics.path, report.path, "", budget)
        launcher.upload(metrics)
        launcher.upload(report)

        decision_art = launcher.output("deploy-model", "decision")
        gate = steps.deploy_model(model.uri, launcher.input("deploy-model", features), launcher.input("deploy-model", metrics),
                                  decision_art.path, min_roc_auc, min_pr_auc, "", "kubernetes", NAMESPACE, canary_percent,
                                  api=custom, ready_timeout_s=30.0, poll_s=0.1)
        launcher.upload(decision_art)

        for name, art in (("metrics.json", metrics), ("report.html", report)):
            shutil.copyfile(art.path, out / name)
        shutil.rmtree(out / "deploy", ignore_errors=True)
        shutil.copytree(decision_art.path, out / "deploy")
        calls = [list(c) for c in custom.calls + core.calls]
        (state / f"kube_calls-{run_id}.json").write_text(json.dumps(calls, indent=1, default=str))

    decision = json.loads((out / "deploy" / "decision.json").read_text())
    result = {
        "cloud": "emulated", "run_id": run_id, "data": data, "output": str(out), "pipeline_root": root,
        "model_uri": model.uri, "features_uri": features.uri, "feature_engine": feature_engine, "trainer": trainer,
        "extract": extracted, "train": trained, "metrics": {k: evaluation.scalars.get(k) for k in ("roc_auc", "pr_auc")},
        "decision": {"rolled_out": decision["deployed"], "action": decision["action"], "reasons": decision["reasons"],
                     "candidate": decision["candidate"], "deployed": decision["deployed_metrics"],
                     "deployed_model_uri": decision["deployed_model_uri"], "rollout": decision["rollout"]},
        "gate": gate, "kubernetes_calls": [c[:2] if c[0] != "get" else c[:4] for c in calls],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "run.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"pipeline finished in {result['seconds']:.0f}s (emulated GCS, BigQuery, Kubernetes)\n"
          f"  model:    {model.uri}\n  metrics:  {out / 'metrics.json'} {result['metrics']}\n"
          f"  decision: {decision['action'] or 'not deployed'}: {'; '.join(decision['reasons'])}\n"
          f"  run:      {out / 'run.json'}", flush=True)
    return result
