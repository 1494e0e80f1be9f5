"""The exact Kubernetes permissions of the pipeline's service account in its (profile) namespace: what this
code calls, plus what KFP's launcher and Argo's executor call from the same pods. Nothing more:
tests/test_cloud_kubeflow.py records the calls the code makes and checks they equal CODE_RULES, and checks
manifests/base/pipeline/rbac.yaml against role_rules().

    role_rules()  # the `rules:` of the attribution-pipeline Role
"""

from __future__ import annotations

Rules = dict[tuple[str, str], frozenset[str]]  # (apiGroup, resource) -> verbs

CODE_RULES: Rules = {
    # platform/spark_submit.py: submit, poll, delete on timeout or cancel
    ("sparkoperator.k8s.io", "sparkapplications"): frozenset({"create", "get", "delete"}),
    # platform/spark_submit.py: the driver's log
    ("", "pods/log"): frozenset({"get"}),
    # platform/deploy.py: read the live one, create the first, patch the canary / promotion / rollback
    ("serving.kserve.io", "inferenceservices"): frozenset({"get", "create", "patch"}),
}
PLATFORM_RULES: Rules = {
    ("", "configmaps"): frozenset({"get"}),  # the KFP v2 launcher reads the kfp-launcher ConfigMap
    ("argoproj.io", "workflowtaskresults"): frozenset({"create", "patch"}),  # Argo's executor reports outputs
}


def pipeline_rules() -> Rules:
    out: dict[tuple[str, str], frozenset[str]] = dict(CODE_RULES)
    for key, verbs in PLATFORM_RULES.items():
        out[key] = out.get(key, frozenset()) | verbs
    return out


def role_rules() -> list[dict]:
    """The Role's rules, one per resource, sorted (what to put in manifests/base/pipeline/rbac.yaml)."""
    return [{"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)}
            for (group, resource), verbs in sorted(pipeline_rules().items())]


def granted(rules: list[dict]) -> Rules:
    """A Role's rules as (apiGroup, resource) -> verbs."""
    out: dict[tuple[str, str], frozenset[str]] = {}
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                out[(group, resource)] = out.get((group, resource), frozenset()) | frozenset(rule.get("verbs", []))
    return out
