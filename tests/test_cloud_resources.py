"""The cloud resources (manifests/cloud/, Config Connector) validate strictly against their vendored CRDs, and
say what the platform needs: the staging dataset's tables expire, every Kubernetes account of
manifests/base is backed by a Google account it may act as (Workload Identity), and each grant is one role on
one resource for one of the project's accounts."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema
import pytest
from manifest_checks import MANIFESTS, load_yaml_docs, render, served_schema, strict_schema

CLOUD = MANIFESTS / "cloud"
SCHEMAS = CLOUD / "schemas"


@functools.cache
def validators() -> dict[str, tuple[str, jsonschema.Draft7Validator]]:
    out = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        crd = next(d for d in load_yaml_docs(path) if d.get("kind") == "CustomResourceDefinition")
        api_version, schema = served_schema(crd)
        schema = strict_schema(copy.deepcopy(schema))
        schema.setdefault("required", []).extend(k for k in ("apiVersion", "kind", "metadata", "spec")
                                                  if k not in schema["required"])
        out[crd["spec"]["names"]["kind"]] = (api_version, jsonschema.Draft7Validator(schema))
    return out


def problems(docs: list[dict]) -> list[str]:
    found = []
    for doc in docs:
        kind = doc.get("kind")
        if kind not in validators():
            found.append(f"{kind}: no vendored CRD in {SCHEMAS}")
            continue
        api_version, validator = validators()[kind]
        if doc.get("apiVersion") != api_version:
            found.append(f"{kind}/{doc['metadata']['name']}: apiVersion {doc.get('apiVersion')}, CRD serves {api_version}")
        found += [f"{kind}/{doc['metadata']['name']}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator.iter_errors(doc)]
    return found


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return render(CLOUD)


def test_every_resource_validates_strictly(docs):
    assert {d["kind"] for d in docs} == {"StorageBucket", "BigQueryDataset", "IAMServiceAccount", "IAMPolicyMember"}
    assert problems(docs) == []


def test_validation_catches_a_mistake(docs):
    bad = copy.deepcopy(next(d for d in docs if d["kind"] == "BigQueryDataset"))
    bad["spec"]["defaultTableExpiration"] = 86400000  # the field is ...Ms
    assert any("defaultTableExpiration" in p for p in problems([bad]))
    member = copy.deepcopy(next(d for d in docs if d["kind"] == "IAMPolicyMember"))
    del member["spec"]["role"]
    assert any("role" in p for p in problems([member]))


def test_staging_tables_expire(docs):
    (dataset,) = [d for d in docs if d["kind"] == "BigQueryDataset"]
    assert dataset["spec"]["resourceID"] == "attribution_staging"  # the pipeline's bq_staging_dataset default
    assert 3_600_000 <= dataset["spec"]["defaultTableExpirationMs"] <= 7 * 86_400_000


def test_every_kubernetes_account_acts_as_its_google_account(docs):
    ksas = [d for d in load_yaml_docs(MANIFESTS / "base" / "serviceaccounts.yaml") if d["kind"] == "ServiceAccount"]
    gsas = {d["spec"]["resourceID"] for d in docs if d["kind"] == "IAMServiceAccount"}
    bindings = {(d["spec"]["member"], d["spec"]["resourceRef"]["name"]) for d in docs
                if d["kind"] == "IAMPolicyMember" and d["spec"]["role"] == "roles/iam.workloadIdentityUser"}
    for ksa in ksas:
        email = ksa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        gsa = email.split("@")[0]
        assert gsa in gsas, f"{ksa['metadata']['name']} names {email}, which manifests/cloud does not create"
        assert (f"serviceAccount:PROJECT_ID.svc.id.goog[attribution/{ksa['metadata']['name']}]", gsa) in bindings


def test_grants_are_per_resource_and_least_privilege(docs):
    grants = [d["spec"] for d in docs if d["kind"] == "IAMPolicyMember"]
    for g in grants:
        assert g["role"] not in ("roles/owner", "roles/editor", "roles/storage.admin", "roles/bigquery.admin"), g
        assert g["member"].startswith("serviceAccount:") and "PROJECT_ID" in g["member"], g
    have = {(g["member"].split(":")[1].split("@")[0], g["role"], g["resourceRef"].get("name")) for g in grants}
    # what issue 16 found missing: staging write, and read of the pipeline root by the predictor and Spark
    assert ("attribution-pipeline", "roles/bigquery.dataEditor", "attribution-staging") in have
    assert ("attribution-predictor", "roles/storage.objectViewer", "attribution-pipeline-root") in have
    assert ("attribution-spark", "roles/storage.objectAdmin", "attribution-pipeline-root") in have


def test_vendored_schemas_are_listed_with_their_hashes():
    import hashlib

    readme = (SCHEMAS / "README.md").read_text()
    for path in SCHEMAS.glob("*.yaml"):
        assert f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}" in readme, path.name
    assert Path(CLOUD / "kustomization.yaml").is_file()
