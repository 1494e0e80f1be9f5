"""Offline checks for manifests/, images/ and skaffold.yaml, shared by the tests/test_manifest*.py files.

Established tools do what they know: kustomize renders (kubectl), kubernetes-validate checks core
resources, the vendored CRDs (manifests/schemas/) check custom resources, check-jsonschema checks
skaffold.yaml, hadolint and checkov check the Dockerfiles, and checkov checks every workload's
containers (resources, securityContext, probes, image tags, RBAC...) with manifests/checkov.yaml.
What remains here is our own policy, which no tool knows: Redis reachable only from the predictor and
sized, persisted and watched as docs/deploy.md says, the predictor reachable only by its clients, Workload
Identity, no literal credentials, digests pinned in prod, disruption budgets.

Every check returns a list of human-readable problems (empty = pass), so the same function runs against
the real files and against a temp copy with a planted mistake (tests/test_manifest_mistakes.py).
Nothing needs a cluster, a Docker daemon or the network.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from attribution.platform.crd import (  # noqa: F401 - re-exported for the tests
    CRD_FILES,
    CRD_KINDS,
    crd_problems,
    crd_validator,
    load_yaml_docs,
    name_of,
    served_schema,
    strict_schema,
)

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
IMAGES = REPO / "images"
SKAFFOLD = REPO / "skaffold.yaml"
TOOLS_BIN = REPO / ".venv-tools" / "bin"  # checkov: its pins clash with requirements.lock (make tools-venv)
SCHEMAS = MANIFESTS / "schemas"  # vendored upstream schemas: see manifests/schemas/README.md
SKAFFOLD_SCHEMA = SCHEMAS / "skaffold-v4beta13.json"
KUBERNETES_VERSION = "1.33.0"  # oldest schema set kubernetes-validate 1.37 ships; GKE stable-channel floor
DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
PREDICTOR = "attribution-predictor"
REDIS = "attribution-redis"
MODEL_NAME = "attribution"
SCRAPER_NAMESPACES = {"monitoring", "gmp-system"}  # Prometheus Operator, GKE Managed Prometheus
REPOSITORY_PATHS = ["/v2/repository/index", "/v2/repository/models/attribution/load",
                    "/v2/repository/models/attribution/unload"]  # KServe's model repository extension

Doc = dict[str, Any]
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRD files are megabytes


# --------------------------------------------------------------------------------------------- tools
def tool(name: str) -> str:
    """Path of a CLI tool: the tools venv, the virtualenv running the tests, the repo's .venv, PATH."""
    dirs = [str(TOOLS_BIN), str(Path(sys.executable).parent), str(REPO / ".venv" / "bin"),
            os.environ.get("PATH", "")]
    found = shutil.which(name, path=os.pathsep.join(dirs))
    if not found:
        raise FileNotFoundError(f"{name} not found in .venv-tools, the virtualenv or on PATH "
                                "(make setup installs it)")
    return found


def run(cmd: list[str], timeout: int = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)


# ---------------------------------------------------------------------------------------- rendering
def kustomize_dirs(root: Path = MANIFESTS) -> list[Path]:
    """base plus every overlay that has a kustomization.yaml."""
    dirs = [root / "base"] + sorted(p.parent for p in (root / "overlays").glob("*/kustomization.yaml"))
    return [d for d in dirs if (d / "kustomization.yaml").exists()]


def components(root: Path = MANIFESTS) -> list[Path]:
    return sorted(p.parent for p in (root / "components").glob("*/kustomization.yaml"))


def render(path: Path, with_components: list[Path] = ()) -> list[Doc]:
    """`kubectl kustomize PATH` as a list of resources (with components added on top, through a temp
    kustomization); raises RuntimeError with kustomize's message."""
    if with_components:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump({
                "resources": [os.path.relpath(path, tmp)],
                "components": [os.path.relpath(c, tmp) for c in with_components]}))
            return render(Path(tmp))
    proc = run([tool("kubectl"), "kustomize", str(path)])
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {path} failed: {proc.stderr.strip()}")
    return [d for d in yaml.load_all(proc.stdout, Loader=_LOADER) if d]


def render_problems(path: Path) -> list[str]:
    try:
        docs = render(path)
    except RuntimeError as exc:
        return [str(exc)]
    return [] if docs else [f"{path} rendered no resources"]


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"].get("name") == name)]


# ------------------------------------------------------------------------------- kubernetes-validate
def kubernetes_validate_problems(docs: list[Doc], version: str = KUBERNETES_VERSION) -> list[str]:
    """`kubernetes-validate --strict` over every non-CRD resource.

    The tool prints WARN and exits 0 for a kind it has no schema for (a typo'd kind or apiVersion would
    pass silently), so any WARN line counts as a failure here; the CRD kinds are checked against their
    own vendored schemas (crd_problems) and are not sent to it.
    """
    core = [d for d in docs if d.get("kind") not in CRD_KINDS]
    if not core:
        return []
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump_all(core, fh, sort_keys=False)
        path = fh.name
    try:
        proc = run([tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, path])
    finally:
        os.unlink(path)
    problems = [line.replace(path, "<rendered>") for line in proc.stdout.splitlines()
                if line.startswith(("WARN", "ERROR", "FATAL"))]
    if proc.returncode != 0 and not problems:
        problems.append(f"kubernetes-validate exited {proc.returncode}: {proc.stderr.strip()}")
    return problems


# ------------------------------------------------------------------------------------------ skaffold
def skaffold_problems(path: Path = SKAFFOLD, schema: Path = SKAFFOLD_SCHEMA) -> list[str]:
    """check-jsonschema against skaffold's v4beta13 schema, plus: every path it names exists."""
    problems = []
    proc = run([tool("check-jsonschema"), "--schemafile", str(schema), str(path)])
    if proc.returncode != 0:
        problems.append(f"check-jsonschema: {(proc.stdout + proc.stderr).strip()}")
    config = yaml.safe_load(path.read_text()) or {}
    root = path.parent
    for label, p in skaffold_paths(config):
        if not (root / p).exists():
            problems.append(f"skaffold.yaml {label} names {p}, which does not exist")
    return problems


def skaffold_paths(config: Doc) -> Iterator[tuple[str, str]]:
    sections = [("", config)] + [(f"profile {p.get('name')}: ", p) for p in config.get("profiles") or []]
    for prefix, section in sections:
        for art in (section.get("build") or {}).get("artifacts") or []:
            context = art.get("context", ".")
            yield f"{prefix}artifact {art.get('image')} context", context
            dockerfile = (art.get("docker") or {}).get("dockerfile")
            if dockerfile:
                yield f"{prefix}artifact {art.get('image')} dockerfile", str(Path(context) / dockerfile)
        for p in ((section.get("manifests") or {}).get("kustomize") or {}).get("paths") or []:
            yield f"{prefix}kustomize path", p
        for p in (section.get("manifests") or {}).get("rawYaml") or []:
            yield f"{prefix}rawYaml", p


# --------------------------------------------------------------------------------------- Dockerfiles
def dockerfiles(root: Path = IMAGES) -> list[Path]:
    return sorted(root.glob("*.Dockerfile"))


def hadolint_problems(dockerfile: Path, config: Path = IMAGES / "hadolint.yaml") -> list[str]:
    cmd = [tool("hadolint"), "--failure-threshold", "error", "--no-color"]
    if config.exists():
        cmd += ["--config", str(config)]
    proc = run(cmd + [str(dockerfile)])
    if proc.returncode == 0:
        return []
    return [f"hadolint {dockerfile.name}: {line}" for line in (proc.stdout + proc.stderr).splitlines()
            if line.strip()] or [f"hadolint {dockerfile.name} exited {proc.returncode}"]


def dockerfile_instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    instructions = dockerfile_instructions(dockerfile)
    starts = [i for i, (ins, _) in enumerate(instructions) if ins == "FROM"]
    return instructions[starts[-1]:] if starts else []


def exec_form(args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) else None


def dockerfile_policy_problems(dockerfile: Path) -> list[str]:
    """Our image policy beyond hadolint and checkov (which check tags, :latest and a root final USER):
    multi-stage (no compilers in the runtime image), bases pinned to a full x.y.z version, and a numeric
    final USER (the kubelet can verify runAsNonRoot only for a numeric one)."""
    problems = []
    users = [rest.split(":")[0] for ins, rest in final_stage(dockerfile) if ins == "USER"]
    if users and not users[-1].isdigit():
        problems.append(f"{dockerfile.name}: final USER {users[-1]!r} is not a numeric uid")
    froms = [rest.split() for ins, rest in dockerfile_instructions(dockerfile) if ins == "FROM"]
    froms = [[p for p in parts if not p.startswith("--")] for parts in froms]
    if len(froms) < 2:
        problems.append(f"{dockerfile.name}: not multi-stage ({len(froms)} FROM)")
    stages = {parts[2] for parts in froms if len(parts) >= 3 and parts[1].upper() == "AS"}
    for parts in froms:
        image = parts[0]
        if image in stages or DIGEST_RE.search(image):
            continue
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if not re.search(r"\d+\.\d+\.\d+", tag):
            problems.append(f"{dockerfile.name}: base image {image!r} is not pinned to a full version")
    return problems


# ------------------------------------------------------------------------------------------ checkov
def _pod_view(doc: Doc, role: str, pod_spec: Doc, labels: Doc) -> Doc:
    meta = doc.get("metadata") or {}
    skips = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith("checkov.io/")}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{meta.get('name')}-{role}", "namespace": meta.get("namespace"),
                         "labels": labels, "annotations": skips},
            "spec": pod_spec}


def pod_views(docs: list[Doc]) -> list[Doc]:
    """The pods the operators make of our custom resources, for checkov (which cannot read CRDs).

    InferenceService predictor -> a Pod with the predictor's pod spec and the containers of its
    ServingRuntime (predictor_containers). SparkApplication driver and
    executor -> a Pod each with the container the Spark Operator builds: image, securityContext, and
    resources from cores/coreRequest (cpu request), coreLimit, memory and memoryLimit.
    The custom resource's `checkov.io/skip*` annotations (reasons for a skipped check) carry over.
    """
    views = []
    for doc in docs:
        spec = doc.get("spec") or {}
        if doc.get("kind") == "InferenceService":
            predictor = copy.deepcopy(spec.get("predictor") or {})
            pod_spec = {k: v for k, v in predictor.items() if k in POD_SPEC_FIELDS}
            pod_spec["containers"] = predictor_containers(docs, doc)
            views.append(_pod_view(doc, "predictor", pod_spec, predictor.get("labels") or {}))
        elif doc.get("kind") == "SparkApplication":
            for role in ("driver", "executor"):
                r = spec.get(role) or {}
                requests = {"cpu": r.get("coreRequest") or r.get("cores"), "memory": r.get("memory")}
                limits = {"cpu": r.get("coreLimit"), "memory": r.get("memoryLimit")}
                container = {
                    "name": f"spark-kubernetes-{role}",
                    "image": r.get("image") or spec.get("image"),
                    "imagePullPolicy": spec.get("imagePullPolicy"),
                    "securityContext": copy.deepcopy(r.get("securityContext")),
                    "resources": {"requests": {k: str(v) for k, v in requests.items() if v},
                                  "limits": {k: str(v) for k, v in limits.items() if v}},
                }
                pod_spec = {"serviceAccountName": r.get("serviceAccount"),
                            "securityContext": copy.deepcopy(r.get("podSecurityContext")),
                            "initContainers": copy.deepcopy(r.get("initContainers") or []),
                            "containers": [{k: v for k, v in container.items() if v is not None}]
                            + copy.deepcopy(r.get("sidecars") or [])}
                views.append(_pod_view(doc, role, {k: v for k, v in pod_spec.items() if v}, r.get("labels") or {}))
    return views


def serving_runtime(docs: list[Doc], isvc: Doc) -> Doc | None:
    """The ServingRuntime (or ClusterServingRuntime) that the InferenceService's model names, if rendered."""
    name = ((isvc["spec"].get("predictor") or {}).get("model") or {}).get("runtime")
    return next((d for d in docs if d.get("kind") in ("ServingRuntime", "ClusterServingRuntime")
                 and d["metadata"].get("name") == name), None) if name else None


def predictor_containers(docs: list[Doc], isvc: Doc) -> list[Doc]:
    """The predictor pod's containers as KServe builds them: the runtime's, with the model spec's container
    fields (resources, env, ...) over its kserve-container; or the predictor's own custom containers."""
    pred = isvc["spec"].get("predictor") or {}
    if "model" not in pred:
        return copy.deepcopy(pred.get("containers") or [])
    runtime = serving_runtime(docs, isvc)
    out = copy.deepcopy((runtime or {}).get("spec", {}).get("containers") or [])
    overrides = {k: v for k, v in pred["model"].items() if k not in MODEL_ONLY_FIELDS}
    for c in out:
        if c.get("name") == "kserve-container":
            c.update(copy.deepcopy(overrides))
    return out


MODEL_ONLY_FIELDS = {"modelFormat", "runtime", "storageUri", "storage", "protocolVersion", "runtimeVersion"}


def serving_runtime_problems(docs: list[Doc]) -> list[str]:
    """The model server is a ServingRuntime and the model URI is the deploy gate's alone: each
    InferenceService's predictor names a rendered runtime that supports its model format and serves
    /mnt/models (where the storage initializer downloads storageUri); no storageUri and no STORAGE_URI env
    in git (`kubectl apply -k` would put it back over the gate's, docs/rollout.md)."""
    problems = []
    for isvc in find(docs, "InferenceService"):
        where, pred = name_of(isvc), isvc["spec"].get("predictor") or {}
        model = pred.get("model")
        if not model:
            problems.append(f"{where}: predictor has no model section naming the ServingRuntime")
            continue
        if "storageUri" in model:
            problems.append(f"{where}: spec.predictor.model.storageUri is set in git; only the deploy gate sets it")
        if pred.get("containers"):
            problems.append(f"{where}: predictor has its own containers beside the model's runtime")
        runtime = serving_runtime(docs, isvc)
        if runtime is None:
            problems.append(f"{where}: names runtime {model.get('runtime')!r}, which is not rendered")
            continue
        formats = {f.get("name") for f in runtime["spec"].get("supportedModelFormats") or []}
        if (model.get("modelFormat") or {}).get("name") not in formats:
            problems.append(f"{where}: model format {model.get('modelFormat')} is not among {name_of(runtime)}'s {formats}")
        for c in predictor_containers(docs, isvc):
            if c.get("name") == "kserve-container" and "--model_dir=/mnt/models" not in (c.get("args") or []):
                problems.append(f"{where}: {name_of(runtime)} kserve-container does not read /mnt/models")
            if any(e.get("name") == "STORAGE_URI" for e in c.get("env") or []):
                problems.append(f"{where}: {c.get('name')} carries a STORAGE_URI env (the URI is storageUri's)")
    return problems


POD_SPEC_FIELDS = {"containers", "initContainers", "volumes", "securityContext", "serviceAccountName",
                   "automountServiceAccountToken", "hostNetwork", "hostPID", "hostIPC", "nodeSelector",
                   "tolerations", "affinity", "priorityClassName", "imagePullSecrets"}


def checkov_run(target: Path, framework: str, config: Path) -> Doc:
    """checkov's JSON report for a file or directory (one framework)."""
    flag = "-d" if target.is_dir() else "-f"
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE")  # no download of the guideline mappings (offline)
    proc = run([tool("checkov"), "--config-file", str(config), "--framework", framework, flag, str(target),
                "-o", "json"], timeout=300, env=env)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"checkov gave no JSON (exit {proc.returncode}): {proc.stderr[-2000:]}") from exc
    if isinstance(report, list):
        report = next(r for r in report if r.get("check_type") == framework)
    if report.get("summary", {}).get("parsing_errors"):
        raise RuntimeError(f"checkov could not parse {target}: {report['results'].get('parsing_errors')}")
    return report


def _failures(report: Doc) -> list[str]:
    return [f"{c['check_id']} {c['resource']}: {c['check_name']}"
            for c in (report.get("results") or {}).get("failed_checks", [])]


def _scanned(report: Doc) -> set[str]:
    results = report.get("results") or {}
    return {c["resource"] for key in ("passed_checks", "failed_checks", "skipped_checks")
            for c in results.get(key, [])}


def checkov_kubernetes_problems(docs: list[Doc], config: Path = MANIFESTS / "checkov.yaml") -> list[str]:
    """checkov's Kubernetes policies over a rendering plus the Pod views of its custom resources.

    Also fails if checkov did not report on every workload and Pod view (a resource it could not read
    must not pass by being skipped)."""
    scanned = [d for d in docs if d.get("kind") not in CRD_KINDS] + pod_views(docs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rendered.yaml"
        path.write_text(yaml.safe_dump_all(scanned, sort_keys=False))
        report = checkov_run(path, "kubernetes", config)
    problems = _failures(report)
    seen = _scanned(report)
    for d in scanned:
        if d["kind"] in WORKLOAD_KINDS:
            rid = f"{d['kind']}.{d['metadata'].get('namespace') or 'default'}.{d['metadata']['name']}"
            if rid not in seen:
                problems.append(f"checkov did not check {rid}")
    return problems


WORKLOAD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}


def container_policy_problems(docs: list[Doc]) -> list[str]:
    """checkov's Kubernetes policy for resources made outside a kustomize rendering (what the pipeline
    renders and submits), checked beside base's NetworkPolicies, under which they run."""
    return checkov_kubernetes_problems(docs + find(render(MANIFESTS / "base"), "NetworkPolicy"))


def checkov_dockerfile_problems(images: Path = IMAGES, config: Path = MANIFESTS / "checkov.yaml") -> list[str]:
    report = checkov_run(images, "dockerfile", config)
    problems = _failures(report)
    seen = {r.split(".Dockerfile")[0].lstrip("/") for r in _scanned(report)}
    problems += [f"checkov did not check {p.name}" for p in dockerfiles(images) if p.name.removesuffix(".Dockerfile") not in seen]
    return problems


# ---------------------------------------------------------------------------- containers and images
def pod_specs(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """(where, pod spec) for every pod template a resource carries."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind == "Pod":
        yield name_of(doc), spec
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield name_of(doc), (spec.get("template") or {}).get("spec") or {}
    elif kind == "CronJob":
        yield name_of(doc), ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec", {})
    elif kind in ("ServingRuntime", "ClusterServingRuntime"):
        yield name_of(doc), spec
    elif kind == "InferenceService":
        for component in ("predictor", "transformer", "explainer"):
            if component in spec:
                yield f"{name_of(doc)} {component}", spec[component]


def containers(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """(where, container) for every container in a resource, Spark's init containers and sidecars too."""
    for where, pod in pod_specs(doc):
        for field in ("initContainers", "containers"):
            for c in pod.get(field) or []:
                yield f"{where} {field[:-1]} {c.get('name')}", c
    if doc.get("kind") == "SparkApplication":
        for role in ("driver", "executor"):
            r = (doc.get("spec") or {}).get(role) or {}
            for field in ("initContainers", "sidecars"):
                for c in r.get(field) or []:
                    yield f"{name_of(doc)} {role} {field[:-1]} {c.get('name')}", c


def images(docs: list[Doc]) -> list[tuple[str, str]]:
    found = []
    for doc in docs:
        for where, c in containers(doc):
            found.append((where, c.get("image")))
        if doc.get("kind") == "SparkApplication":
            spec = doc.get("spec") or {}
            found.append((f"{name_of(doc)} spec.image", spec.get("image")))
            for role in ("driver", "executor"):
                if (spec.get(role) or {}).get("image"):
                    found.append((f"{name_of(doc)} {role}.image", spec[role]["image"]))
    return found


def digest_problems(docs: list[Doc]) -> list[str]:
    """Every image pinned by a well-formed digest (required of prod; tags elsewhere are checkov's)."""
    return [f"{where}: image {image!r} is not pinned by digest" for where, image in images(docs)
            if not isinstance(image, str) or not DIGEST_RE.search(image)]


# ------------------------------------------------------------------------- credentials and identity
CREDENTIAL_RE = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\"private_key\"\s*:|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{35}"
    r"|[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@",  # scheme://user:password@host
)


def secret_problems(docs: list[Doc]) -> list[str]:
    """No Secret carries literal values (credentials come from Workload Identity), and no ConfigMap,
    env value or argument looks like a credential."""
    problems = []
    for doc in docs:
        if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
            keys = sorted((doc.get("data") or {}) | (doc.get("stringData") or {}))
            problems.append(f"{name_of(doc)}: Secret holds literal values {keys}")
        values = []
        if doc.get("kind") == "ConfigMap":
            values += [(f"{name_of(doc)} data.{k}", v) for k, v in (doc.get("data") or {}).items()]
        for where, c in containers(doc):
            values += [(f"{where} env {e.get('name')}", e.get("value")) for e in c.get("env") or []]
            values += [(f"{where} args", a) for a in (c.get("args") or []) + (c.get("command") or [])]
        for where, value in values:
            if isinstance(value, str) and CREDENTIAL_RE.search(value):
                problems.append(f"{where}: looks like a literal credential")
    return problems


def workload_identity_problems(docs: list[Doc]) -> list[str]:
    """Each workload runs as its own ServiceAccount, bound to the Google service account of the same
    name through Workload Identity (the annotation); no key files, so nothing else grants access."""
    problems = []
    sas = {d["metadata"]["name"]: d for d in find(docs, "ServiceAccount")}
    used = {PREDICTOR: [d for d in find(docs, "InferenceService")
                        if (d["spec"].get("predictor") or {}).get("serviceAccountName") != PREDICTOR],
            "attribution-spark": [d for d in find(docs, "SparkApplication")
                                  if {(d["spec"].get(r) or {}).get("serviceAccount") for r in ("driver", "executor")}
                                  != {"attribution-spark"}]}
    for sa, wrong in used.items():
        problems += [f"{name_of(d)}: does not run as ServiceAccount {sa}" for d in wrong]
    for name in ("attribution-pipeline", "attribution-spark", PREDICTOR):
        annotation = ((sas.get(name) or {}).get("metadata", {}).get("annotations") or {}).get(
            "iam.gke.io/gcp-service-account")
        if annotation != f"{name}@PROJECT_ID.iam.gserviceaccount.com":
            problems.append(f"ServiceAccount/{name}: iam.gke.io/gcp-service-account is {annotation!r}, "
                            f"not {name}@PROJECT_ID.iam.gserviceaccount.com")
    return problems


# ------------------------------------------------------------------------------ disruption budgets
def _selects(selector: Doc, labels: Doc) -> bool:
    match = (selector or {}).get("matchLabels") or {}
    if not match and not (selector or {}).get("matchExpressions"):
        return False
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expr in (selector or {}).get("matchExpressions") or []:
        key, op, vals = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and labels.get(key) in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def workloads(docs: list[Doc]) -> list[tuple[str, int, Doc]]:
    """(name, minimum replicas, pod labels) of everything a PodDisruptionBudget could cover."""
    out = []
    for doc in docs:
        kind, spec = doc.get("kind"), doc.get("spec") or {}
        if kind in ("Deployment", "StatefulSet", "ReplicaSet"):
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            out.append((name_of(doc), int(spec.get("replicas", 1)), labels))
        elif kind == "InferenceService":
            predictor = spec.get("predictor") or {}
            out.append((name_of(doc), int(predictor.get("minReplicas", 1)), predictor.get("labels") or {}))
    return out


def pdb_problems(docs: list[Doc]) -> list[str]:
    """A PodDisruptionBudget exactly where more than one replica is guaranteed: none for a single
    replica (it would block node drains forever), one for every workload with minReplicas > 1."""
    problems = []
    pdbs = find(docs, "PodDisruptionBudget")
    for name, replicas, labels in workloads(docs):
        covering = [p for p in pdbs if _selects((p.get("spec") or {}).get("selector"), labels)]
        if replicas > 1 and not covering:
            problems.append(f"{name}: {replicas} minimum replicas but no PodDisruptionBudget")
        if replicas <= 1 and covering:
            problems.append(f"{name}: {replicas} replica(s) but PodDisruptionBudget "
                            f"{', '.join(name_of(p) for p in covering)} covers it")
    for p in pdbs:
        if not any(_selects((p.get("spec") or {}).get("selector"), labels) for _, _, labels in workloads(docs)):
            problems.append(f"{name_of(p)}: selects no workload in the same rendering")
    return problems


# ------------------------------------------------------------------------------------ network policy
def ingress_rules(docs: list[Doc], app: str) -> list[tuple[str, Doc]]:
    """(policy name, ingress rule) of every NetworkPolicy that selects the pods labelled app."""
    out = []
    for p in find(docs, "NetworkPolicy"):
        spec = p.get("spec") or {}
        if spec.get("podSelector") == {} or _selects(spec.get("podSelector"), {"app.kubernetes.io/name": app}):
            out += [(p["metadata"]["name"], rule) for rule in spec.get("ingress") or []]
    return out


def _namespaces(peer: Doc) -> set[str] | None:
    """The namespaces a peer names by kubernetes.io/metadata.name (None: not named that way)."""
    sel = peer.get("namespaceSelector")
    if sel is None:
        return None
    names = set()
    if "kubernetes.io/metadata.name" in (sel.get("matchLabels") or {}):
        names.add(sel["matchLabels"]["kubernetes.io/metadata.name"])
    for e in sel.get("matchExpressions") or []:
        if e.get("key") == "kubernetes.io/metadata.name" and e.get("operator") == "In":
            names |= set(e.get("values") or [])
    return names or None


def _ports(rule: Doc) -> set[int] | None:
    """The TCP ports a rule admits (None: every port)."""
    ports = rule.get("ports")
    return None if not ports else {p.get("port") for p in ports}


def scrape_admitted(rules: list[tuple[str, Doc]], port: int) -> set[str]:
    """Which scraper namespaces some rule admits on port."""
    admitted = set()
    for _, rule in rules:
        ports = _ports(rule)
        if ports is not None and port not in ports:
            continue
        for peer in rule.get("from") or []:
            admitted |= (_namespaces(peer) or set()) & SCRAPER_NAMESPACES
    return admitted


# --------------------------------------------------------------------------------------------- Redis
_UNITS = {"": 1, "k": 10**3, "m": 10**-3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
HEADROOM = 1.25      # maxmemory over the data the sizing annotations predict
LIMIT_FACTOR = 1.5   # container memory over maxmemory: AOF-rewrite fork (copy-on-write), buffers, fragmentation
VOLUME_FACTOR = 2.0  # volume over maxmemory: the old and the new AOF during a rewrite


def quantity(value: str | int) -> float:
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"unsupported quantity {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def redis_memory_bytes(value: str) -> int:
    m = re.fullmatch(r"([0-9]+)(b|kb|mb|gb)?", value.lower())
    if not m:
        raise ValueError(f"unsupported redis size {value!r}")
    return int(m.group(1)) * {None: 1, "b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30}[m.group(2)]


def expand_args(container: Doc) -> list[str]:
    """The container's args as the kubelet passes them: $(VAR) replaced by the env value."""
    env = {e["name"]: e.get("value") for e in container.get("env") or [] if "value" in e}
    return [re.sub(r"\$\((\w+)\)", lambda m: str(env.get(m.group(1), m.group(0))), str(a))
            for a in container.get("args") or []]


def redis_flags(args: list[str]) -> dict[str, str]:
    """--name value pairs of redis-server's command line."""
    return {a[2:]: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}


def expected_redis_bytes(annotations: Doc) -> float:
    """Data the largest window holds: clicks x key groups x bytes per event (the sizing annotations)."""
    keys = ("attribution/sizing-clicks-per-window", "attribution/sizing-key-groups",
            "attribution/sizing-bytes-per-event")
    values = [float(annotations[k]) for k in keys]
    return values[0] * values[1] * values[2]


def redis_problems(docs: list[Doc]) -> list[str]:
    """Our Redis policy (docs/deploy.md): no silent loss, sized from the annotations, persisted, watched.

    noeviction; --maxmemory present, resolved and >= data x HEADROOM; the memory limit >= maxmemory x
    LIMIT_FACTOR; AOF on with fsync every second into --dir on a PersistentVolumeClaim of at least
    maxmemory x VOLUME_FACTOR; a redis_exporter sidecar that a PodMonitoring (or ServiceMonitor) scrapes.
    """
    problems = []
    sts = find(docs, "StatefulSet", REDIS)
    if not sts:
        return [f"StatefulSet/{REDIS} missing"]
    sts = sts[0]
    pod = sts["spec"]["template"]["spec"]
    where = f"StatefulSet/{REDIS}"
    redis = next((c for c in pod.get("containers") or [] if c.get("name") == "redis"), None)
    if redis is None:
        return [f"{where}: no container named redis"]
    flags = redis_flags(expand_args(redis))
    if flags.get("maxmemory-policy") != "noeviction":
        problems.append(f"{where}: maxmemory-policy {flags.get('maxmemory-policy')!r}, not noeviction "
                        "(evictions lose state silently)")
    maxmem = None
    try:
        maxmem = redis_memory_bytes(flags["maxmemory"])
    except KeyError:
        problems.append(f"{where}: --maxmemory missing (Redis would grow to the OOM killer)")
    except ValueError as exc:
        problems.append(f"{where}: --maxmemory {exc}")
    if maxmem is not None:
        try:
            need = expected_redis_bytes(sts["metadata"].get("annotations") or {}) * HEADROOM
        except (KeyError, ValueError) as exc:
            problems.append(f"{where}: sizing annotation missing or not a number: {exc}")
            need = None
        if need is not None and maxmem < need:
            problems.append(f"{where}: --maxmemory {maxmem / 2**20:.0f} MiB is below the sized "
                            f"{need / 2**20:.0f} MiB (events x bytes per event x {HEADROOM})")
        limit = ((redis.get("resources") or {}).get("limits") or {}).get("memory")
        if limit is None or quantity(limit) < maxmem * LIMIT_FACTOR:
            problems.append(f"{where}: memory limit {limit} is below --maxmemory x {LIMIT_FACTOR}")
    if flags.get("appendonly") != "yes" or flags.get("appendfsync") != "everysec":
        problems.append(f"{where}: AOF not on with appendfsync everysec "
                        f"(appendonly={flags.get('appendonly')!r}, appendfsync={flags.get('appendfsync')!r})")
    mounts = {m.get("mountPath"): m.get("name") for m in redis.get("volumeMounts") or []}
    claims = {c["metadata"]["name"]: c for c in sts["spec"].get("volumeClaimTemplates") or []}
    claim = claims.get(mounts.get(flags.get("dir", "/data")))
    if claim is None:
        problems.append(f"{where}: --dir {flags.get('dir', '/data')} is not on a volumeClaimTemplate "
                        "(the AOF would not survive the pod)")
    elif maxmem is not None:
        size = quantity(claim["spec"]["resources"]["requests"]["storage"])
        if size < maxmem * VOLUME_FACTOR:
            problems.append(f"{where}: volume {claim['metadata']['name']} ({size / 2**30:.1f} GiB) is below "
                            f"--maxmemory x {VOLUME_FACTOR}")
    exporter = next((c for c in pod.get("containers") or [] if "redis_exporter" in str(c.get("image"))), None)
    if exporter is None:
        problems.append(f"{where}: no redis_exporter sidecar")
    else:
        ports = {p.get("name"): p.get("containerPort") for p in exporter.get("ports") or []}
        labels = sts["spec"]["template"]["metadata"].get("labels") or {}
        monitors = [m for m in find(docs, "PodMonitoring") + find(docs, "ServiceMonitor")
                    if _selects(m["spec"].get("selector"), labels)
                    and any(e.get("port") in ports for e in m["spec"].get("endpoints") or [])]
        if not monitors:
            problems.append(f"{where}: no PodMonitoring/ServiceMonitor scrapes the exporter's port {ports}")
        for port in ports.values():
            missing = SCRAPER_NAMESPACES - scrape_admitted(ingress_rules(docs, REDIS), port)
            if missing:
                problems.append(f"{where}: NetworkPolicy does not admit scrapes of {port} from {sorted(missing)}")
    return problems


def redis_access_problems(docs: list[Doc]) -> list[str]:
    """Redis (6379) reachable from the predictor pods only: every ingress rule that selects Redis pods and
    admits 6379 (or all ports) names exactly the predictor pods; and some rule admits them."""
    problems, admitted = [], False
    for policy, rule in ingress_rules(docs, REDIS):
        ports = _ports(rule)
        if ports is not None and 6379 not in ports:
            continue
        peers = rule.get("from")
        if peers != [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": PREDICTOR}}}]:
            problems.append(f"NetworkPolicy/{policy}: admits {peers or 'everyone'} to Redis port 6379")
        else:
            admitted = True
    if not admitted:
        problems.append("no NetworkPolicy admits the predictor to Redis on 6379")
    return problems


def redis_alert_problems(docs: list[Doc]) -> list[str]:
    """Alerts before memory runs out (used/max over 0.8 for at least a few minutes), on writes refused at
    maxmemory (OOM), and on the exporter being down; for GMP (Rules) and the Prometheus Operator
    (PrometheusRule) alike."""
    problems = []
    redis_rules = [d for kind in ("Rules", "PrometheusRule") for d in find(docs, kind)
                   if d["metadata"]["name"] == "attribution-redis"]  # other rules (the monitor's) are not Redis's
    for kind in ("Rules", "PrometheusRule"):
        for doc in (d for d in redis_rules if d["kind"] == kind):
            rules = [r for g in doc["spec"].get("groups") or [] for r in g.get("rules") or [] if "alert" in r]
            exprs = [(r, re.sub(r"\s+", "", r.get("expr", ""))) for r in rules]
            memory = [r for r, e in exprs if "redis_memory_used_bytes/redis_memory_max_bytes>" in e
                      and float(e.split(">")[-1]) <= 0.8 and _minutes(r.get("for")) >= 1]
            if not memory:
                problems.append(f"{name_of(doc)}: no alert on used/max memory > 0.8 held for minutes")
            if not any('redis_errors_total{err="OOM"}' in e for _, e in exprs):
                problems.append(f"{name_of(doc)}: no alert on writes refused at maxmemory (OOM)")
            if not any('up{job="attribution-redis"}==0' in e for _, e in exprs):
                problems.append(f"{name_of(doc)}: no alert on redis_exporter down")
    if not redis_rules:
        problems.append("no Rules or PrometheusRule named attribution-redis with the Redis alerts")
    return problems


def _minutes(duration: str | None) -> float:
    m = re.fullmatch(r"(\d+)([smh])", duration or "")
    return 0 if not m else int(m.group(1)) * {"s": 1 / 60, "m": 1, "h": 60}[m.group(2)]


# ----------------------------------------------------------------------------------------- predictor
def _istio_match(pattern: str, path: str) -> bool:
    """Istio's path match: exact, prefix `x*`, suffix `*x`, or `*`."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return path.endswith(pattern[1:])
    return path == pattern


def _operation_admits(rule: Doc, path: str) -> bool:
    """Whether an AuthorizationPolicy rule's `to` admits a request to path (no `to`: every path)."""
    if not rule.get("to"):
        return True
    for to in rule["to"]:
        op = to.get("operation") or {}
        if op.get("paths") and not any(_istio_match(p, path) for p in op["paths"]):
            continue
        if any(_istio_match(p, path) for p in op.get("notPaths") or []):
            continue
        return True
    return False


def predictor_mode(isvc: Doc) -> str:
    return (isvc["metadata"].get("annotations") or {}).get("serving.kserve.io/deploymentMode", "Serverless")


def predictor_access_problems(docs: list[Doc]) -> list[str]:
    """Only its clients reach the predictor (docs/deploy.md, "Who reaches the predictor").

    - cluster-local (no route on the public gateway) and an Istio sidecar on its pods;
    - a DENY AuthorizationPolicy covering KServe's model repository endpoints, and no ALLOW rule that
      admits them;
    - the ALLOW policy's first rule names client principals (cluster.local/ns/NS/sa/SA, no wildcards);
    - every ALLOW rule without a source identity is GET /metrics only;
    - NetworkPolicy: not from istio-system (the public gateway's namespace), scrapes admitted from
      monitoring and gmp-system, egress to istiod on 15012 since sidecars are on;
    - Serverless: the activator kept out of the path (target-burst-capacity 0) so Istio sees the client.
    """
    problems = []
    isvcs = find(docs, "InferenceService")
    if not isvcs:
        return ["InferenceService missing"]
    isvc = isvcs[0]
    labels = isvc["metadata"].get("labels") or {}
    pod_labels = (isvc["spec"].get("predictor") or {}).get("labels") or {}
    if labels.get("networking.kserve.io/visibility") != "cluster-local":
        problems.append(f"{name_of(isvc)}: not labelled networking.kserve.io/visibility: cluster-local")
    if pod_labels.get("sidecar.istio.io/inject") != "true":
        problems.append(f"{name_of(isvc)}: predictor pods get no Istio sidecar (sidecar.istio.io/inject), "
                        "so no AuthorizationPolicy applies")
    annotations = isvc["metadata"].get("annotations") or {}
    if predictor_mode(isvc) == "Serverless" and annotations.get("autoscaling.knative.dev/target-burst-capacity") != "0":
        problems.append(f"{name_of(isvc)}: Serverless without target-burst-capacity 0: the activator in the "
                        "path would call the model under its own identity")
    policies = [p for p in find(docs, "AuthorizationPolicy")
                if _selects((p["spec"].get("selector") or {}), pod_labels)]
    deny = [r for p in policies if p["spec"].get("action") == "DENY" for r in p["spec"].get("rules") or []
            if not r.get("from") and not r.get("when")]
    allow = [(p, r) for p in policies if p["spec"].get("action", "ALLOW") == "ALLOW"
             for r in p["spec"].get("rules") or []]
    for path in REPOSITORY_PATHS:
        if not any(_operation_admits(r, path) for r in deny):
            problems.append(f"AuthorizationPolicy: no DENY rule covers {path}")
        problems += [f"{name_of(p)}: a rule admits {path}" for p, r in allow if _operation_admits(r, path)]
    if not allow:
        problems.append("no ALLOW AuthorizationPolicy selects the predictor (without one, Istio admits everyone)")
    else:
        first = allow[0][1]
        principals = [pr for f in first.get("from") or [] for pr in (f.get("source") or {}).get("principals") or []]
        if not principals or not all(re.fullmatch(r"cluster\.local/ns/[a-z0-9-]+/sa/[a-z0-9-]+", p) for p in principals):
            problems.append(f"{name_of(allow[0][0])}: first rule must name client principals "
                            f"(cluster.local/ns/NS/sa/SA), found {principals}")
    for p, r in allow:
        if not r.get("from"):
            ops = [t.get("operation") or {} for t in r.get("to") or []]
            if not ops or any(o.get("paths") != ["/metrics"] or o.get("methods") != ["GET"] for o in ops):
                problems.append(f"{name_of(p)}: a rule admits any caller to more than GET /metrics")
    rules = ingress_rules(docs, PREDICTOR)
    for policy, rule in rules:
        for peer in rule.get("from") or [{}]:
            names = _namespaces(peer)
            if not peer or (names and "istio-system" in names) or peer.get("namespaceSelector") == {}:
                problems.append(f"NetworkPolicy/{policy}: admits {peer or 'everyone'} (the public gateway's "
                                "namespace or all) to the predictor")
    missing = SCRAPER_NAMESPACES - scrape_admitted(rules, 8080)
    if missing:
        problems.append(f"NetworkPolicy: predictor metrics not admitted from {sorted(missing)}")
    if pod_labels.get("sidecar.istio.io/inject") == "true":
        egress = [r for p in find(docs, "NetworkPolicy")
                  if _selects(p["spec"].get("podSelector"), pod_labels) or p["spec"].get("podSelector") == {}
                  for r in p["spec"].get("egress") or []]
        if not any(15012 in (_ports(r) or {15012})
                   and any("istio-system" in (_namespaces(t) or set()) for t in r.get("to") or [])
                   for r in egress):
            problems.append("NetworkPolicy: no egress from the predictor to istiod (istio-system:15012); "
                            "its sidecar cannot get configuration or certificates")
    return problems


def predictor_probe_problems(docs: list[Doc]) -> list[str]:
    """Probes on the model, and autoscaling fields that mean something in the deployment mode.

    Readiness and liveness on /v2/models/<model>/ready (after an unload, /v2/health/ready still says
    ready). Serverless (Knative KPA): concurrency or rps metric, containerConcurrency and timeout set.
    RawDeployment (HPA): cpu or memory metric with a percentage target, and none of the Knative-only
    fields (containerConcurrency, timeout, autoscaling.knative.dev annotations), which would do nothing.
    """
    problems = []
    for isvc in find(docs, "InferenceService"):
        pred = isvc["spec"].get("predictor") or {}
        where = name_of(isvc)
        ready = f"/v2/models/{MODEL_NAME}/ready"
        for c in predictor_containers(docs, isvc):
            for probe in ("readinessProbe", "livenessProbe"):
                path = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
                if path != ready:
                    problems.append(f"{where} {c.get('name')}: {probe} is on {path!r}, not {ready}")
        mode = predictor_mode(isvc)
        annotations = isvc["metadata"].get("annotations") or {}
        if mode == "Serverless":
            if pred.get("scaleMetric") not in ("concurrency", "rps"):
                problems.append(f"{where}: Serverless scaleMetric {pred.get('scaleMetric')!r} (KPA: concurrency/rps)")
            for key in ("containerConcurrency", "timeout"):
                if key not in pred:
                    problems.append(f"{where}: Serverless without predictor.{key}")
        elif mode == "RawDeployment":
            for key in ("containerConcurrency", "timeout"):
                if key in pred:
                    problems.append(f"{where}: predictor.{key} does nothing in RawDeployment mode")
            knative = [k for k in annotations if k.startswith("autoscaling.knative.dev/")]
            if knative:
                problems.append(f"{where}: {knative} do nothing in RawDeployment mode")
            if pred.get("scaleMetric") not in ("cpu", "memory"):
                problems.append(f"{where}: RawDeployment scaleMetric {pred.get('scaleMetric')!r} (HPA: cpu/memory)")
            if not 0 < int(pred.get("scaleTarget", 0)) <= 100:
                problems.append(f"{where}: RawDeployment scaleTarget {pred.get('scaleTarget')!r} is not a percentage")
        else:
            problems.append(f"{where}: unknown deploymentMode {mode!r}")
    return problems


# --------------------------------------------------------------------------------------- temp copies
def copy_tree(tmp: Path) -> Path:
    """A temp copy of what the checks read (manifests/, images/, skaffold.yaml) to plant mistakes into."""
    root = tmp / "repo"
    shutil.copytree(MANIFESTS, root / "manifests", ignore=shutil.ignore_patterns("schemas"))
    (root / "manifests" / "schemas").symlink_to(SCHEMAS)
    shutil.copytree(IMAGES, root / "images")
    shutil.copy(SKAFFOLD, root / "skaffold.yaml")
    return root


def edit_yaml(path: Path, match: dict[str, str], mutate: Callable[[Doc], None]) -> None:
    """Apply mutate(doc) to the documents of path whose kind (and name) match; write them back."""
    docs = load_yaml_docs(path)
    hits = [d for d in docs if all((d.get("kind") if k == "kind" else d.get("metadata", {}).get(k)) == v
                                   for k, v in match.items())]
    assert hits, f"no document matching {match} in {path}"
    for d in hits:
        mutate(d)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
