"""Offline checks for manifests/, images/ and skaffold.yaml, shared by tests/test_manifests.py.

Every check is a function that returns a list of human-readable problems (empty = pass), so the same
function runs against the real files and against the seeded-mistake copies that prove it can fail.
Nothing here needs a cluster, a Docker daemon or the network: kubectl (kustomize), kubernetes-validate,
check-jsonschema and hadolint all come from the project's virtualenv.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
IMAGES = REPO / "images"
SKAFFOLD = REPO / "skaffold.yaml"
SCHEMAS = MANIFESTS / "schemas"  # vendored upstream schemas: see manifests/schemas/README.md
SKAFFOLD_SCHEMA = SCHEMAS / "skaffold-v4beta13.json"
CRD_FILES = {
    "InferenceService": SCHEMAS / "serving.kserve.io_inferenceservices.yaml",
    "SparkApplication": SCHEMAS / "sparkoperator.k8s.io_sparkapplications.yaml",
    "PrometheusRule": SCHEMAS / "monitoring.coreos.com_prometheusrules.yaml",  # written here, see its header
}
CRD_KINDS = set(CRD_FILES)
KUBERNETES_VERSION = "1.33.0"  # oldest schema set kubernetes-validate 1.37 ships; GKE stable-channel floor
DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")

Doc = dict[str, Any]
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRD files are megabytes


# --------------------------------------------------------------------------------------------- tools
def tool(name: str) -> str:
    """Path of a CLI tool, preferring the virtualenv that runs the tests (then the repo's .venv)."""
    dirs = [str(Path(sys.executable).parent), str(REPO / ".venv" / "bin"), os.environ.get("PATH", "")]
    found = shutil.which(name, path=os.pathsep.join(dirs))
    if not found:
        raise FileNotFoundError(f"{name} not found in the virtualenv or on PATH (make setup installs it)")
    return found


def run(cmd: list[str], timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


# ---------------------------------------------------------------------------------------- rendering
def kustomize_dirs(root: Path = MANIFESTS) -> list[Path]:
    """base plus every overlay that has a kustomization.yaml."""
    dirs = [root / "base"] + sorted(p.parent for p in (root / "overlays").glob("*/kustomization.yaml"))
    return [d for d in dirs if (d / "kustomization.yaml").exists()]


def render(path: Path) -> list[Doc]:
    """`kubectl kustomize PATH` as a list of resources; raises RuntimeError with kustomize's message."""
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


def load_yaml_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.load_all(path.read_text(), Loader=_LOADER) if d]


def name_of(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# ------------------------------------------------------------------------------- kubernetes-validate
def kubernetes_validate_problems(docs: list[Doc], version: str = KUBERNETES_VERSION) -> list[str]:
    """`kubernetes-validate --strict` over every non-CRD resource.

    The tool prints WARN and exits 0 for a kind it has no schema for (a typo'd kind or apiVersion would
    pass silently), so any WARN line counts as a failure here; the CRD kinds are checked separately
    against their own schemas (crd_problems) and are not sent to it.
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


# -------------------------------------------------------------------------------------- CRD schemas
_COMBINATORS = ("anyOf", "allOf", "oneOf")


def strict_schema(node: Any) -> Any:
    """An OpenAPI v3 CRD schema as a strict JSON schema.

    - `additionalProperties: false` wherever `properties` are given, unless the node preserves unknown
      fields (`x-kubernetes-preserve-unknown-fields`) or already says what extra keys may hold;
    - `x-kubernetes-int-or-string` accepts an integer or a string;
    - `nullable: true` also accepts null.
    Only schema positions are walked (property names are never mistaken for keywords).
    """
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if "properties" in out:
        out["properties"] = {k: strict_schema(v) for k, v in out["properties"].items()}
        if not out.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in out:
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict_schema(out["additionalProperties"])
    if "items" in out:
        items = out["items"]
        out["items"] = [strict_schema(i) for i in items] if isinstance(items, list) else strict_schema(items)
    for key in _COMBINATORS:
        if key in out:
            out[key] = [strict_schema(s) for s in out[key]]
    if "not" in out:
        out["not"] = strict_schema(out["not"])
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        if "anyOf" not in out:
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable"):
        types = out.get("type")
        if isinstance(types, str):
            out["type"] = [types, "null"]
        elif isinstance(types, list) and "null" not in types:
            out["type"] = types + ["null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = list(out["enum"]) + [None]
    return out


def served_schema(crd: Doc, api_version: str | None = None) -> tuple[str, Doc]:
    """(apiVersion, openAPIV3Schema) of the served version (the storage one if several are served)."""
    group = crd["spec"]["group"]
    versions = [v for v in crd["spec"]["versions"] if v.get("served")]
    if api_version:
        versions = [v for v in versions if f"{group}/{v['name']}" == api_version] or versions
    chosen = next((v for v in versions if v.get("storage")), versions[0])
    return f"{group}/{chosen['name']}", chosen["schema"]["openAPIV3Schema"]


@functools.cache
def crd_validator(kind: str) -> tuple[str, jsonschema.protocols.Validator]:
    crd = next(d for d in load_yaml_docs(CRD_FILES[kind]) if d.get("kind") == "CustomResourceDefinition")
    api_version, schema = served_schema(crd)
    schema = strict_schema(copy.deepcopy(schema))
    schema.setdefault("required", [])
    for key in ("apiVersion", "kind", "metadata", "spec"):
        if key not in schema["required"]:
            schema["required"].append(key)
    return api_version, jsonschema.Draft7Validator(schema)


def crd_problems(docs: list[Doc]) -> list[str]:
    """Strict validation of every InferenceService and SparkApplication against its CRD."""
    problems = []
    for doc in docs:
        kind = doc.get("kind")
        if kind not in CRD_KINDS:
            continue
        api_version, validator = crd_validator(kind)
        if doc.get("apiVersion") != api_version:
            problems.append(f"{name_of(doc)}: apiVersion {doc.get('apiVersion')!r}, CRD serves {api_version}")
        if not doc.get("metadata", {}).get("name"):
            problems.append(f"{name_of(doc)}: metadata.name missing")
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            where = ".".join(str(p) for p in err.absolute_path) or "<root>"
            problems.append(f"{name_of(doc)}: {where}: {err.message}")
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


# ---------------------------------------------------------------------------------------- Dockerfiles
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
    """What hadolint cannot see through `FROM ${ARG}`: pinned bases, multi-stage, non-root final user."""
    problems = []
    instructions = dockerfile_instructions(dockerfile)
    args = {}
    for ins, rest in instructions:
        if ins == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip().strip('"')
    stage_names = set()
    froms = [rest for ins, rest in instructions if ins == "FROM"]
    if len(froms) < 2:
        problems.append(f"{dockerfile.name}: not multi-stage ({len(froms)} FROM)")
    for rest in froms:
        parts = rest.split()
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
        if len(parts) >= 3 and parts[1].upper() == "AS":
            stage_names.add(parts[2])
        if image in stage_names:
            continue
        if not DIGEST_RE.search(image):
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if not tag or tag == "latest" or not re.search(r"\d+\.\d+\.\d+", tag):
                problems.append(f"{dockerfile.name}: base image {image!r} is not pinned to a full version")
    users = [rest for ins, rest in final_stage(dockerfile) if ins == "USER"]
    if not users:
        problems.append(f"{dockerfile.name}: final stage has no USER (runs as root)")
    else:
        uid = users[-1].split(":")[0]
        if not uid.isdigit() or int(uid) == 0:
            problems.append(f"{dockerfile.name}: final USER {users[-1]!r} must be a numeric non-root uid "
                            "(runAsNonRoot can only verify numeric users)")
    return problems


# ------------------------------------------------------------------------------ container inventory
def pod_specs(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """(where, pod spec) for every pod template a resource carries."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind == "Pod":
        yield name_of(doc), spec
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield name_of(doc), (spec.get("template") or {}).get("spec") or {}
    elif kind == "CronJob":
        yield name_of(doc), ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec", {})
    elif kind == "InferenceService":
        for component in ("predictor", "transformer", "explainer"):
            if component in spec:
                yield f"{name_of(doc)} {component}", spec[component]


def containers(doc: Doc) -> Iterator[tuple[str, Doc, Doc]]:
    """(where, container, pod-level securityContext) for every ordinary container in a resource."""
    for where, pod in pod_specs(doc):
        for field in ("initContainers", "containers"):
            for c in pod.get(field) or []:
                yield f"{where} {field[:-1]} {c.get('name')}", c, pod.get("securityContext") or {}
    if doc.get("kind") == "SparkApplication":
        for role in ("driver", "executor"):
            r = (doc.get("spec") or {}).get(role) or {}
            for field in ("initContainers", "sidecars"):
                for c in r.get(field) or []:
                    yield (f"{name_of(doc)} {role} {field[:-1]} {c.get('name')}", c,
                           r.get("podSecurityContext") or {})


def spark_roles(doc: Doc) -> Iterator[tuple[str, Doc]]:
    if doc.get("kind") == "SparkApplication":
        for role in ("driver", "executor"):
            yield f"{name_of(doc)} {role}", (doc.get("spec") or {}).get(role) or {}


def images(docs: list[Doc]) -> list[tuple[str, str]]:
    found = []
    for doc in docs:
        for where, c, _ in containers(doc):
            found.append((where, c.get("image")))
        if doc.get("kind") == "SparkApplication":
            spec = doc.get("spec") or {}
            found.append((f"{name_of(doc)} spec.image", spec.get("image")))
            for role in ("driver", "executor"):
                if (spec.get(role) or {}).get("image"):
                    found.append((f"{name_of(doc)} {role}.image", spec[role]["image"]))
    return found


# ------------------------------------------------------------------------------------------- policy
def security_problems(where: str, sc: Doc, pod_sc: Doc) -> list[str]:
    problems = []

    def effective(key: str) -> Any:
        return sc[key] if key in sc else pod_sc.get(key)

    if effective("runAsNonRoot") is not True:
        problems.append(f"{where}: runAsNonRoot is not true")
    if effective("runAsUser") == 0:
        problems.append(f"{where}: runAsUser is 0 (root)")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problems.append(f"{where}: capabilities do not drop ALL")
    if (sc.get("capabilities") or {}).get("add"):
        problems.append(f"{where}: adds capabilities {sc['capabilities']['add']}")
    if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: seccompProfile is not RuntimeDefault")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: readOnlyRootFilesystem is not true")
    if sc.get("privileged"):
        problems.append(f"{where}: privileged")
    return problems


def image_problems(where: str, image: Any, require_digest: bool = False) -> list[str]:
    if not image or not isinstance(image, str):
        return [f"{where}: no image"]
    if "@sha256:" in image:
        return [] if DIGEST_RE.search(image) else [f"{where}: malformed digest in {image!r}"]
    if require_digest:
        return [f"{where}: image {image!r} is not pinned by digest"]
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return [f"{where}: image {image!r} has no tag"]
    if last.endswith(":latest"):
        return [f"{where}: image {image!r} uses :latest"]
    return []


def container_policy_problems(docs: list[Doc], require_digest: bool = False) -> list[str]:
    """requests + limits, hardened securityContext and a pinned image on every container, Spark too."""
    problems = []
    for doc in docs:
        for where, c, pod_sc in containers(doc):
            res = c.get("resources") or {}
            for section in ("requests", "limits"):
                for key in ("cpu", "memory"):
                    if key not in (res.get(section) or {}):
                        problems.append(f"{where}: resources.{section}.{key} missing")
            problems += security_problems(where, c.get("securityContext") or {}, pod_sc)
        for where, role in spark_roles(doc):
            if not (role.get("cores") or role.get("coreRequest")):
                problems.append(f"{where}: cores/coreRequest (cpu request) missing")
            for key, what in (("coreLimit", "cpu limit"), ("memory", "memory request"),
                              ("memoryLimit", "memory limit")):
                if not role.get(key):
                    problems.append(f"{where}: {key} ({what}) missing")
            problems += security_problems(where, role.get("securityContext") or {},
                                          role.get("podSecurityContext") or {})
        for where, image in images([doc]):
            problems += image_problems(where, image, require_digest)
    return problems


CREDENTIAL_RE = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\"private_key\"\s*:|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{35}"
    r"|[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@",  # scheme://user:password@host
)


def secret_problems(docs: list[Doc]) -> list[str]:
    """No Secret carries literal values (credentials come from Workload Identity or an external secret
    store), and no ConfigMap / env value looks like a credential."""
    problems = []
    for doc in docs:
        if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
            problems.append(f"{name_of(doc)}: Secret holds literal values {sorted((doc.get('data') or {}) | (doc.get('stringData') or {}))}")
        values = []
        if doc.get("kind") == "ConfigMap":
            values += [(f"{name_of(doc)} data.{k}", v) for k, v in (doc.get("data") or {}).items()]
        for where, c, _ in containers(doc):
            values += [(f"{where} env {e.get('name')}", e.get("value")) for e in c.get("env") or []]
            values += [(f"{where} args", a) for a in (c.get("args") or []) + (c.get("command") or [])]
        for where, value in values:
            if isinstance(value, str) and CREDENTIAL_RE.search(value):
                problems.append(f"{where}: looks like a literal credential")
    return problems


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
    pdbs = [d for d in docs if d.get("kind") == "PodDisruptionBudget"]
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


_UNITS = {"": 1, "k": 10**3, "m": 10**-3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int) -> float:
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"unsupported quantity {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def redis_memory_bytes(value: str) -> float:
    m = re.fullmatch(r"([0-9]+)(b|kb|mb|gb)?", value.lower())
    if not m:
        raise ValueError(f"unsupported redis size {value!r}")
    return int(m.group(1)) * {None: 1, "b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30}[m.group(2)]


def redis_problems(docs: list[Doc]) -> list[str]:
    """Redis' maxmemory stays below its container limit (else the kernel, not LRU, evicts the state)."""
    problems = []
    for doc in docs:
        for where, c, _ in containers(doc):
            args = c.get("args") or []
            if "--maxmemory" not in args:
                continue
            limit = ((c.get("resources") or {}).get("limits") or {}).get("memory")
            maxmem = redis_memory_bytes(str(args[args.index("--maxmemory") + 1]))
            if limit is None or maxmem >= 0.9 * quantity(limit):
                problems.append(f"{where}: --maxmemory {maxmem:.0f} B is not below 90% of limit {limit}")
    return problems


# --------------------------------------------------------------------------------------- temp copies
def copy_tree(tmp: Path) -> Path:
    """A temp copy of what the checks read (manifests/, images/, skaffold.yaml) to seed mistakes into."""
    root = tmp / "repo"
    shutil.copytree(MANIFESTS, root / "manifests")
    shutil.copytree(IMAGES, root / "images")
    shutil.copy(SKAFFOLD, root / "skaffold.yaml")
    return root


def edit_yaml(path: Path, match: dict[str, str], mutate) -> None:
    """Apply mutate(doc) to the document of path whose kind (and name) match; write it back."""
    docs = load_yaml_docs(path)
    hits = [d for d in docs if all((d.get("kind") if k == "kind" else d.get("metadata", {}).get(k)) == v
                                   for k, v in match.items())]
    assert hits, f"no document matching {match} in {path}"
    for d in hits:
        mutate(d)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
