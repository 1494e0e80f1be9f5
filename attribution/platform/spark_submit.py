"""Distributed training as a SparkApplication (Spark Operator): render it from the kustomize template,
submit it with the Kubernetes API, wait for a final state, and bring back the driver's log.

    doc = render_spark_application("gs://b/features/", "gs://b/models/run-1", valid_from="2017-11-09")
    result = submit_and_wait(doc)          # in the cluster, with the pipeline's service account
    run_local("features/", "model/")       # the same entry point (attribution/training/spark_job.py), local master

The template is manifests/base/spark-training/sparkapplication.yaml; only image, arguments, executor
instances / memory (with the pod memory limit kept equal to heap + overhead) and a unique name change.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from attribution.platform import images

log = logging.getLogger(__name__)
GROUP, VERSION, PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
ENTRY_POINT = Path(__file__).resolve().parents[1] / "training" / "spark_job.py"
FINAL_STATES = {"COMPLETED", "FAILED", "SUBMISSION_FAILED", "FAILING_OUT_OF_RETRIES"}  # operator states
SUCCESS_STATES = {"COMPLETED"}
# A Kubeflow profile namespace injects Istio sidecars; a driver with one never finishes (the sidecar keeps
# the pod running), so Spark's pods opt out.
NO_SIDECAR = {"sidecar.istio.io/inject": "false"}
# The KFP v2 launcher's own pod, set on every step's container (downward API).
POD_NAME_ENV, POD_UID_ENV = "KFP_POD_NAME", "KFP_POD_UID"


def manifests_root() -> Path:
    """The manifests/ folder: $ATTRIBUTION_MANIFESTS, the source checkout, or /app/manifests (images)."""
    candidates = [os.environ.get("ATTRIBUTION_MANIFESTS"), Path(__file__).resolve().parents[2] / "manifests",
                  "/app/manifests"]
    for c in candidates:
        if c and (Path(c) / "base").is_dir():
            return Path(c)
    raise FileNotFoundError(
        "manifests/ not found (set ATTRIBUTION_MANIFESTS to the folder holding base/); looked in "
        + ", ".join(str(c) for c in candidates if c)
    )


def load_template(path: str | Path | None = None) -> dict:
    p = Path(path) if path else manifests_root() / "base" / "spark-training" / "sparkapplication.yaml"
    return yaml.safe_load(p.read_text())


_MEM = re.compile(r"^(\d+)([kmgt])$", re.IGNORECASE)
_GI = {"k": 1 / 2**20, "m": 1 / 1024, "g": 1, "t": 1024}


def _gib(jvm_size: str) -> float:
    m = _MEM.match(str(jvm_size).strip())
    if not m:
        raise ValueError(f"memory must look like 8g / 512m (JVM style), got {jvm_size!r}")
    return int(m.group(1)) * _GI[m.group(2).lower()]


def _limit(memory: str, overhead: str) -> str:
    total = _gib(memory) + _gib(overhead)
    return f"{int(total)}Gi" if total == int(total) else f"{round(total * 1024)}Mi"


def unique_name(prefix: str = "attribution-train", suffix: str | None = None) -> str:
    """A DNS-1123 name short enough for the driver pod and UI service names the operator derives."""
    s = re.sub(r"[^a-z0-9-]", "-", (suffix or uuid.uuid4().hex[:8]).lower()).strip("-")[:12]
    return f"{prefix}-{s}".strip("-")


def render_spark_application(
    input_uri: str,
    model_dir_uri: str,
    valid_from: str | None = None,
    image: str | None = None,
    executor_instances: int = 2,
    executor_memory: str | None = None,
    executor_memory_overhead: str | None = None,
    name: str | None = None,
    namespace: str | None = None,
    template: dict | None = None,
    extra_arguments: list[str] | None = None,
    owner: dict | None = None,
) -> dict:
    """The SparkApplication to submit: the template with image, arguments, executors and name patched, its
    pods without Istio sidecars, and owned by `owner` (the step's pod: see step_pod_owner) so that Kubernetes'
    garbage collector deletes it with the step."""
    doc = copy.deepcopy(template if template is not None else load_template())
    spec = doc["spec"]
    doc["metadata"]["name"] = name or unique_name()
    if namespace:
        doc["metadata"]["namespace"] = namespace
    if owner:
        doc["metadata"]["ownerReferences"] = [owner]
    for role in ("driver", "executor"):
        spec[role].setdefault("annotations", {}).update(NO_SIDECAR)
    spec.pop("suspend", None)  # the kustomize copy is suspended; a submitted run must start
    spec["image"] = image or images.image("attribution-spark")  # read when rendered: the step's env
    args = ["--input", input_uri, "--model-dir", model_dir_uri]
    if valid_from:
        args += ["--valid-from", valid_from]
    spec["arguments"] = args + list(extra_arguments or [])
    ex = spec["executor"]
    if executor_instances < 1:
        raise ValueError("executor_instances must be at least 1")
    ex["instances"] = int(executor_instances)
    if executor_memory:
        ex["memory"] = executor_memory
    if executor_memory_overhead:
        ex["memoryOverhead"] = executor_memory_overhead
    if ex.get("memoryOverhead"):
        ex["memoryLimit"] = _limit(ex["memory"], ex["memoryOverhead"])
    return doc


def step_pod_owner(env: dict[str, str] | None = None) -> dict | None:
    """An ownerReference to the pipeline step's pod (KFP_POD_NAME / KFP_POD_UID), or None outside KFP."""
    env = os.environ if env is None else env
    name, uid = env.get(POD_NAME_ENV), env.get(POD_UID_ENV)
    if not (name and uid):
        log.warning("no %s/%s: the SparkApplication has no owner and outlives a cancelled step", POD_NAME_ENV,
                    POD_UID_ENV)
        return None
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid, "blockOwnerDeletion": False,
            "controller": False}


# ---- cluster ------------------------------------------------------------------------------------------
def kube_clients():
    """CustomObjectsApi + CoreV1Api with the pod's service account (in cluster) or ~/.kube/config."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi(), client.CoreV1Api()


@dataclass
class SparkRunResult:
    name: str
    namespace: str
    state: str
    error_message: str | None
    driver_pod: str | None
    driver_log: str

    @property
    def succeeded(self) -> bool:
        return self.state in SUCCESS_STATES


def driver_log(core, pod: str | None, namespace: str, tail_lines: int = 300) -> str:
    if not pod:
        return ""
    try:
        return core.read_namespaced_pod_log(name=pod, namespace=namespace, tail_lines=tail_lines)
    except Exception as err:  # noqa: BLE001 - the pod may be gone (TTL) or never scheduled; keep the result
        return f"<driver log of {pod} unavailable: {err}>"


def delete_application(custom, name: str, namespace: str) -> bool:
    """Delete the SparkApplication (the operator then removes its driver and executors); False if gone."""
    from kubernetes.client.exceptions import ApiException

    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    log.warning("deleted SparkApplication %s/%s", namespace, name)
    return True


class Cancelled(Exception):
    """The step was told to stop (SIGTERM: a cancelled or timed-out KFP run)."""


def _on_sigterm(signum, frame):
    raise Cancelled("SIGTERM")


def submit_and_wait(
    doc: dict, custom=None, core=None, poll_s: float = 15.0, timeout_s: float = 6 * 3600,
    sleep=time.sleep, clock=time.monotonic,
) -> SparkRunResult:
    """Create the SparkApplication and poll status.applicationState.state until it is final; the driver
    log is printed and returned. Raises RuntimeError (with the log tail) when the run does not complete.
    On a timeout, a SIGTERM (the run cancelled) or any error while waiting, the SparkApplication is deleted."""
    if custom is None or core is None:
        custom, core = kube_clients()
    name, ns = doc["metadata"]["name"], doc["metadata"].get("namespace", "default")
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, doc)
    log.info("submitted SparkApplication %s/%s (%d executors)", ns, name, doc["spec"]["executor"]["instances"])
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
    finished = False
    try:
        state, status = _wait(custom, name, ns, poll_s, timeout_s, sleep, clock)
        finished = state in FINAL_STATES
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        if not finished:
            delete_application(custom, name, ns)
    pod = (status.get("driverInfo") or {}).get("podName")
    text = driver_log(core, pod, ns)
    result = SparkRunResult(name, ns, state, (status.get("applicationState") or {}).get("errorMessage"), pod, text)
    print(f"---- driver log ({pod}) ----\n{text}\n---- end of driver log; final state {state} ----", flush=True)
    if not result.succeeded:
        raise RuntimeError(f"SparkApplication {ns}/{name} ended {state}: {result.error_message or ''}\n"
                           f"{text[-4000:]}")
    return result


def _wait(custom, name: str, ns: str, poll_s: float, timeout_s: float, sleep, clock) -> tuple[str, dict]:
    deadline = clock() + timeout_s
    state, status = "NEW", {}
    while True:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        status = obj.get("status") or {}
        new_state = (status.get("applicationState") or {}).get("state") or "NEW"
        if new_state != state:
            log.info("SparkApplication %s: %s", name, new_state)
            state = new_state
        if state in FINAL_STATES:
            return state, status
        if clock() > deadline:
            return "TIMED_OUT", status
        sleep(poll_s)


# ---- local: the same entry point with a local master -------------------------------------------------------
def local_command(input_path: str, model_dir: str, valid_from: str | None = None,
                  extra_arguments: list[str] | None = None) -> list[str]:
    cmd = [sys.executable, str(ENTRY_POINT), "--input", str(input_path), "--model-dir", str(model_dir)]
    if valid_from:
        cmd += ["--valid-from", valid_from]
    return cmd + list(extra_arguments or [])


def run_local(input_path: str, model_dir: str, valid_from: str | None = None, master: str = "local[2]",
              extra_arguments: list[str] | None = None, timeout_s: float | None = None) -> int:
    """Run attribution/training/spark_job.py in a subprocess with SPARK_MASTER=master; raises on failure."""
    if not ENTRY_POINT.is_file():
        raise FileNotFoundError(f"Spark training entry point {ENTRY_POINT} is missing")
    env = {**os.environ, "SPARK_MASTER": master}
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    cmd = local_command(input_path, model_dir, valid_from, extra_arguments)
    log.info("spark training (local master %s): %s", master, " ".join(cmd))
    proc = subprocess.run(cmd, env=env, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{ENTRY_POINT.name} exited {proc.returncode}")
    return proc.returncode
