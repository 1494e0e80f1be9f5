"""Custom resources checked as the API server would, against the vendored CRDs (manifests/schemas/): the
manifest checks (tests/manifest_checks.py) and the recording Kubernetes API (kube_recording) share this.

    problems = crd_problems([doc])      # [] when every custom resource in docs matches its CRD
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from attribution.platform.spark_submit import manifests_root

Doc = dict[str, Any]
CRD_FILES = {
    "InferenceService": "serving.kserve.io_inferenceservices.yaml",
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml",
    "SparkApplication": "sparkoperator.k8s.io_sparkapplications.yaml",
    "AuthorizationPolicy": "security.istio.io_authorizationpolicies.yaml",
    "PodMonitoring": "monitoring.googleapis.com_podmonitorings.yaml",
    "Rules": "monitoring.googleapis.com_rules.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
}
CRD_KINDS = set(CRD_FILES)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRD files are megabytes


def schemas_dir() -> Path:
    return manifests_root() / "schemas"


def load_yaml_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.load_all(Path(path).read_text(), Loader=_LOADER) if d]


def name_of(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


_COMBINATORS = ("anyOf", "allOf", "oneOf")


def strict_schema(node: Any) -> Any:
    """A CRD's OpenAPI v3 schema as the strict JSON schema the API server applies.

    The API server prunes unknown fields (a typo silently does nothing), so here they are errors:
    `additionalProperties: false` wherever `properties` are given, unless the node preserves unknown
    fields or already says what extra keys may hold; `x-kubernetes-int-or-string` accepts an integer or
    a string; `nullable: true` also accepts null. Only schema positions are walked.
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


def served_schema(crd: Doc) -> tuple[str, Doc]:
    """(apiVersion, openAPIV3Schema) of the storage version (the first served one if none stores)."""
    group = crd["spec"]["group"]
    versions = [v for v in crd["spec"]["versions"] if v.get("served")]
    chosen = next((v for v in versions if v.get("storage")), versions[0])
    return f"{group}/{chosen['name']}", chosen["schema"]["openAPIV3Schema"]


@functools.cache
def crd_validator(kind: str, schemas: Path | None = None) -> tuple[str, jsonschema.protocols.Validator]:
    crd = next(d for d in load_yaml_docs((schemas or schemas_dir()) / CRD_FILES[kind]) if d.get("kind") == "CustomResourceDefinition")
    api_version, schema = served_schema(crd)
    schema = copy.deepcopy(schema)
    # Some CRDs (Istio's) describe only spec/status; every object has these three.
    for key, sub in (("apiVersion", {"type": "string"}), ("kind", {"type": "string"}), ("metadata", {"type": "object"})):
        schema.setdefault("properties", {}).setdefault(key, sub)
    schema = strict_schema(schema)
    schema.setdefault("required", [])
    for key in ("apiVersion", "kind", "metadata", "spec"):
        if key not in schema["required"]:
            schema["required"].append(key)
    return api_version, jsonschema.Draft7Validator(schema)


def crd_problems(docs: list[Doc]) -> list[str]:
    """Strict validation of every custom resource against its vendored CRD."""
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
