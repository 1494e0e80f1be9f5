"""Every manifest check can fail: each test plants one kind of mistake into a temp copy of manifests/
(or images/, skaffold.yaml) and asserts that the check meant to catch it reports it, by name.

Tool-based checks (kustomize, kubernetes-validate, the vendored CRDs, check-jsonschema, hadolint,
checkov) and our own policy (tests/manifest_checks.py) alike; the real files pass them all
(tests/test_manifests.py).
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manifest_checks as mc

Doc = dict


@pytest.fixture
def tree(tmp_path):
    return mc.copy_tree(tmp_path)


def base_file(tree: Path, rel: str) -> Path:
    return tree / "manifests" / "base" / rel


def render(tree: Path, where: str = "base", components: tuple[str, ...] = ()) -> list[Doc]:
    return mc.render(tree / "manifests" / where, [tree / "manifests" / "components" / c for c in components])


def replace_text(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def container(d: Doc, name: str) -> Doc:
    return next(c for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def predictor_container(d: Doc) -> Doc:
    """The model server's container in the ServingRuntime document."""
    return d["spec"]["containers"][0]


# ================================================================================ kustomize
def test_kustomize_missing_resource(tree):
    replace_text(base_file(tree, "kustomization.yaml"), "- configmap.yaml", "- configmap-typo.yaml")
    assert any("configmap-typo.yaml" in p for p in mc.render_problems(tree / "manifests" / "base"))


# ====================================================================== kubernetes-validate
def test_kubernetes_validate_unknown_field(tree):
    mc.edit_yaml(base_file(tree, "redis/statefulset.yaml"), {"kind": "StatefulSet"},
                 lambda d: container(d, "redis").__setitem__("resource", {"limits": {"cpu": "1"}}))
    problems = mc.kubernetes_validate_problems(render(tree))
    assert any("ERROR" in p and "resource" in p for p in problems), problems


def test_kubernetes_validate_wrong_type(tree):
    mc.edit_yaml(base_file(tree, "redis/statefulset.yaml"), {"kind": "StatefulSet"},
                 lambda d: d["spec"].__setitem__("replicas", "one"))
    problems = mc.kubernetes_validate_problems(render(tree))
    assert any("ERROR" in p and "replicas" in p for p in problems), problems


def test_kubernetes_validate_unknown_kind_is_not_silently_skipped(tree):
    mc.edit_yaml(base_file(tree, "redis/service.yaml"), {"kind": "Service"},
                 lambda d: d.__setitem__("apiVersion", "v2"))
    problems = mc.kubernetes_validate_problems(render(tree))
    assert any(p.startswith("WARN") and "Service" in p for p in problems), problems


# ============================================================================ vendored CRDs
def test_crd_isvc_unknown_field_and_wrong_type(tree):
    def mutate(d):
        d["spec"]["predictor"]["minReplica"] = 2
        d["spec"]["predictor"]["maxReplicas"] = "three"
        d["spec"]["predictor"]["deploymentStrategy"] = {"rollingUpdate": {"maxSurge": [1]}}  # int-or-string
    mc.edit_yaml(base_file(tree, "serving/inferenceservice.yaml"), {"kind": "InferenceService"}, mutate)
    mc.edit_yaml(base_file(tree, "serving/servingruntime.yaml"), {"kind": "ServingRuntime"},
                 lambda d: predictor_container(d)["readinessProbe"].__setitem__("httpGett", {}))
    problems = mc.crd_problems(render(tree))
    for needle in ("minReplica'", "predictor.maxReplicas", "httpGett", "maxSurge"):
        assert any(needle in p for p in problems), (needle, problems)


def test_crd_sparkapplication_unknown_field_wrong_type_and_enum(tree):
    def mutate(d):
        d["spec"]["driver"]["coress"] = 1
        d["spec"]["executor"]["instances"] = "2"
        d["spec"]["type"] = "Pythn"
    mc.edit_yaml(base_file(tree, "spark-training/sparkapplication.yaml"), {"kind": "SparkApplication"}, mutate)
    problems = mc.crd_problems(render(tree))
    for needle in ("coress", "executor.instances", "spec.type"):
        assert any(needle in p for p in problems), (needle, problems)


def test_crd_authorizationpolicy_bad_action_and_field(tree):
    def mutate(d):
        d["spec"]["action"] = "REJECT"
        d["spec"]["rules"][0]["to"][0]["operation"]["path"] = ["/x"]
    mc.edit_yaml(base_file(tree, "serving/authorizationpolicy.yaml"),
                 {"kind": "AuthorizationPolicy", "name": "attribution-predictor-deny-repository"}, mutate)
    problems = mc.crd_problems(render(tree))
    assert any("spec.action" in p for p in problems), problems
    assert any("'path'" in p for p in problems), problems


def test_crd_monitoring_resources(tree):
    mc.edit_yaml(base_file(tree, "redis/monitoring.yaml"), {"kind": "PodMonitoring"},
                 lambda d: d["spec"]["endpoints"][0].__setitem__("intervall", "30s"))
    mc.edit_yaml(base_file(tree, "redis/monitoring.yaml"), {"kind": "Rules"},
                 lambda d: d["spec"]["groups"][0]["rules"][0].__setitem__("for", 5))
    replace_text(tree / "manifests" / "components" / "prometheus-operator" / "monitoring.yaml",
                 "    - port: metrics\n", "    - port: metrics\n      scrapeTimeoutt: 10s\n")
    problems = mc.crd_problems(render(tree, components=("prometheus-operator",)))
    assert any("PodMonitoring" in p and "intervall" in p for p in problems), problems
    assert any("Rules/" in p and ".for" in p for p in problems), problems
    assert any("PrometheusRule/" in p and ".for" in p for p in problems), problems  # copied by the component
    assert any("ServiceMonitor" in p and "scrapeTimeoutt" in p for p in problems), problems


# ============================================================================== skaffold
def test_skaffold_bad_key_and_missing_paths(tree):
    path = tree / "skaffold.yaml"
    replace_text(path, "tagPolicy:", "tagPolicyy:")
    replace_text(path, "images/serving.Dockerfile", "images/serve.Dockerfile")
    replace_text(path, "- manifests/overlays/prod", "- manifests/overlays/production")
    problems = mc.skaffold_problems(path)
    for needle in ("tagPolicyy", "serve.Dockerfile", "overlays/production"):
        assert any(needle in p for p in problems), (needle, problems)


# =========================================================================== Dockerfiles
def test_hadolint_errors(tree):
    path = tree / "images" / "serving.Dockerfile"
    config = tree / "images" / "hadolint.yaml"
    text = path.read_text()
    path.write_text(text.replace("WORKDIR /src", "WORKDIR src"))
    assert any("DL3000" in p for p in mc.hadolint_problems(path, config))
    path.write_text(text + "USER root\n")
    assert any("DL3002" in p for p in mc.hadolint_problems(path, config))


def test_checkov_dockerfile_root_user_and_latest_base(tree):
    images = tree / "images"
    replace_text(images / "serving.Dockerfile", "USER 10001:10001", "USER root")
    text = (images / "spark.Dockerfile").read_text()
    (images / "spark.Dockerfile").write_text(text.replace("FROM python:3.11.13-slim-bookworm\n", "FROM python:latest\n"))
    problems = mc.checkov_dockerfile_problems(images, tree / "manifests" / "checkov.yaml")
    assert any(p.startswith("CKV_DOCKER_8") and "serving.Dockerfile" in p for p in problems), problems
    assert any(p.startswith("CKV_DOCKER_7") and "spark.Dockerfile" in p for p in problems), problems


def test_dockerfile_policy_single_stage_loose_base_and_named_user(tree):
    path = tree / "images" / "serving.Dockerfile"
    text = path.read_text()
    path.write_text(text.replace("python:3.11.13-slim-bookworm", "python:3.11-slim"))
    assert any("not pinned to a full version" in p for p in mc.dockerfile_policy_problems(path))
    path.write_text(text.replace("USER 10001:10001", "USER attribution"))
    assert any("not a numeric uid" in p for p in mc.dockerfile_policy_problems(path))
    final = text[text.rindex("FROM "):]
    path.write_text(final.replace("COPY --from=build", "COPY"))
    assert any("not multi-stage" in p for p in mc.dockerfile_policy_problems(path))


# ===================================================================== checkov, Kubernetes
def _plant_container_mistakes(tree: Path) -> None:
    """One resource per kind of mistake, so each expected failure has one cause."""
    def predictor(d):
        c = predictor_container(d)
        del c["resources"]["limits"]                          # CKV_K8S_11, CKV_K8S_13
        del c["securityContext"]["readOnlyRootFilesystem"]   # CKV_K8S_22
        c["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}  # CKV_K8S_37 (no drop ALL)
    mc.edit_yaml(base_file(tree, "serving/servingruntime.yaml"), {"kind": "ServingRuntime"}, predictor)

    def redis(d):
        c = container(d, "redis")
        c["securityContext"]["allowPrivilegeEscalation"] = True  # CKV_K8S_20
        c["securityContext"]["privileged"] = True                # CKV_K8S_16
        container(d, "redis-exporter")["image"] = "oliver006/redis_exporter:latest"  # CKV_K8S_14
    mc.edit_yaml(base_file(tree, "redis/statefulset.yaml"), {"kind": "StatefulSet"}, redis)

    def spark(d):
        del d["spec"]["executor"]["memoryLimit"]                               # CKV_K8S_13 executor
        for sc in ("securityContext", "podSecurityContext"):
            d["spec"]["driver"][sc]["runAsNonRoot"] = False                    # CKV_K8S_23 driver
            d["spec"]["driver"][sc]["runAsUser"] = 0                           # CKV_K8S_40 driver
        del d["metadata"]["annotations"]["checkov.io/skip2"]                   # CKV_K8S_9 unskipped
    mc.edit_yaml(base_file(tree, "spark-training/sparkapplication.yaml"), {"kind": "SparkApplication"}, spark)


@pytest.fixture(scope="module")
def checkov_planted(tmp_path_factory) -> list[str]:
    tree = mc.copy_tree(tmp_path_factory.mktemp("checkov"))
    _plant_container_mistakes(tree)
    return mc.checkov_kubernetes_problems(render(tree), tree / "manifests" / "checkov.yaml")


@pytest.mark.parametrize("check,resource", [
    ("CKV_K8S_11", "Pod.attribution.attribution-predictor"),      # cpu limit
    ("CKV_K8S_13", "Pod.attribution.attribution-predictor"),      # memory limit
    ("CKV_K8S_22", "Pod.attribution.attribution-predictor"),      # read-only root filesystem
    ("CKV_K8S_37", "Pod.attribution.attribution-predictor"),      # capabilities not dropped
    ("CKV_K8S_20", "StatefulSet.attribution.attribution-redis"),  # privilege escalation
    ("CKV_K8S_16", "StatefulSet.attribution.attribution-redis"),  # privileged
    ("CKV_K8S_14", "StatefulSet.attribution.attribution-redis"),  # :latest
    ("CKV_K8S_13", "Pod.attribution.attribution-train-executor"),  # Spark memoryLimit
    ("CKV_K8S_23", "Pod.attribution.attribution-train-driver"),   # root
    ("CKV_K8S_40", "Pod.attribution.attribution-train-driver"),   # uid 0
    ("CKV_K8S_9", "Pod.attribution.attribution-train-driver"),    # a skip annotation removed
])
def test_checkov_kubernetes_reports_planted_mistake(checkov_planted, check, resource):
    assert any(p.startswith(f"{check} {resource}:") for p in checkov_planted), checkov_planted


def test_checkov_config_skips_only_what_it_lists(tree):
    """The skips in manifests/checkov.yaml are what keeps a check quiet: without the CKV_K8S_43 skip,
    base's tagged images fail checkov's digest check."""
    replace_text(tree / "manifests" / "checkov.yaml", "  - CKV_K8S_43\n", "")
    problems = mc.checkov_kubernetes_problems(render(tree), tree / "manifests" / "checkov.yaml")
    assert any(p.startswith("CKV_K8S_43 ") for p in problems), problems


# ============================================================================== own policy
Mutation = Callable[[Path], None]


def _edit(rel: str, match: dict[str, str], mutate: Callable[[Doc], None]) -> Mutation:
    return lambda tree: mc.edit_yaml(base_file(tree, rel), match, mutate)


def _text(rel: str, old: str, new: str) -> Mutation:
    return lambda tree: replace_text(tree / "manifests" / rel, old, new)


def _redis(mutate: Callable[[Doc], None]) -> Mutation:
    return _edit("redis/statefulset.yaml", {"kind": "StatefulSet"}, mutate)


def _drop_flag(flag: str) -> Callable[[Doc], None]:
    def mutate(d):
        args = container(d, "redis")["args"]
        i = args.index(flag)
        del args[i:i + 2]
    return mutate


def _set_flag(flag: str, value: str) -> Callable[[Doc], None]:
    def mutate(d):
        args = container(d, "redis")["args"]
        args[args.index(flag) + 1] = value
    return mutate


def _no_volume_claims(d):
    del d["spec"]["volumeClaimTemplates"]
    d["spec"]["template"]["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]


def _rule(name: str, mutate: Callable[[Doc], None]) -> Callable[[Doc], None]:
    def outer(d):
        rule = next(r for g in d["spec"]["groups"] for r in g["rules"] if r.get("alert") == name)
        mutate(rule)
    return outer


def _drop_rule(name: str) -> Callable[[Doc], None]:
    def mutate(d):
        for g in d["spec"]["groups"]:
            g["rules"] = [r for r in g["rules"] if r.get("alert") != name]
    return mutate


def _policy(name: str, mutate: Callable[[Doc], None]) -> Mutation:
    return _edit("networkpolicies.yaml", {"kind": "NetworkPolicy", "name": name}, mutate)


def _scrapers(values: list[str]) -> Callable[[Doc], None]:
    def mutate(d):
        for rule in d["spec"]["ingress"]:
            for peer in rule["from"]:
                for e in (peer.get("namespaceSelector") or {}).get("matchExpressions") or []:
                    e["values"] = values
    return mutate


def _allow(mutate: Callable[[Doc], None]) -> Mutation:
    return _edit("serving/authorizationpolicy.yaml",
                 {"kind": "AuthorizationPolicy", "name": "attribution-predictor-allow"}, mutate)


def _isvc(mutate: Callable[[Doc], None]) -> Mutation:
    return _edit("serving/inferenceservice.yaml", {"kind": "InferenceService"}, mutate)


def _runtime(mutate: Callable[[Doc], None]) -> Mutation:
    return _edit("serving/servingruntime.yaml", {"kind": "ServingRuntime"}, mutate)


def _without_deny(tree: Path) -> None:
    path = base_file(tree, "serving/authorizationpolicy.yaml")
    docs = [d for d in mc.load_yaml_docs(path) if d["spec"].get("action") != "DENY"]
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


PROD_REDIS = "overlays/prod/kustomization.yaml"

# (id, mutation, rendering, check, expected words in one problem)
OWN_POLICY = [
    # Redis: no silent loss, sized, persisted
    ("maxmemory-deleted", _redis(_drop_flag("--maxmemory")), "base", mc.redis_problems, "--maxmemory missing"),
    ("maxmemory-unresolved", _redis(lambda d: container(d, "redis").__setitem__("env", [])), "base",
     mc.redis_problems, "unsupported redis size"),
    ("eviction-policy", _redis(_set_flag("--maxmemory-policy", "allkeys-lru")), "base", mc.redis_problems, "noeviction"),
    ("maxmemory-undersized", _text(PROD_REDIS, "value: 36gb", "value: 8gb"), "overlays/prod", mc.redis_problems,
     "below the sized"),
    ("bytes-per-event-grown", _redis(lambda d: d["metadata"]["annotations"].__setitem__(
        "attribution/sizing-bytes-per-event", "400")), "base", mc.redis_problems, "below the sized"),
    ("sizing-annotation-gone", _redis(lambda d: d["metadata"]["annotations"].pop("attribution/sizing-key-groups")),
     "base", mc.redis_problems, "sizing annotation"),
    ("limit-too-tight", _text(PROD_REDIS, "memory: 54Gi}", "memory: 40Gi}"), "overlays/prod", mc.redis_problems,
     "memory limit"),
    ("aof-off", _redis(_set_flag("--appendonly", "no")), "base", mc.redis_problems, "AOF not on"),
    ("fsync-always", _redis(_set_flag("--appendfsync", "always")), "base", mc.redis_problems, "AOF not on"),
    ("no-volume-claim", _redis(_no_volume_claims), "base", mc.redis_problems, "not on a volumeClaimTemplate"),
    ("volume-too-small", _text(PROD_REDIS, "value: 80Gi", "value: 40Gi"), "overlays/prod", mc.redis_problems,
     "volume data"),
    ("no-exporter", _redis(lambda d: d["spec"]["template"]["spec"].__setitem__("containers", [container(d, "redis")])),
     "base", mc.redis_problems, "no redis_exporter"),
    ("exporter-not-scraped", _edit("redis/monitoring.yaml", {"kind": "PodMonitoring"},
                                   lambda d: d["spec"]["endpoints"][0].__setitem__("port", "http")),
     "base", mc.redis_problems, "no PodMonitoring/ServiceMonitor"),
    ("gmp-scrape-blocked", _policy("attribution-redis-ingress", _scrapers(["monitoring"])), "base",
     mc.redis_problems, "gmp-system"),
    # Redis: only the predictor
    ("redis-open-to-namespace", _policy("attribution-redis-ingress", lambda d: d["spec"]["ingress"][0]["from"].append(
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}})), "base",
     mc.redis_access_problems, "to Redis port 6379"),
    ("redis-all-ports-to-spark", _policy("attribution-redis-ingress", lambda d: d["spec"]["ingress"].append(
        {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "attribution-spark"}}}]})), "base",
     mc.redis_access_problems, "attribution-spark"),
    ("predictor-not-admitted", _policy("attribution-redis-ingress", lambda d: d["spec"]["ingress"].pop(0)), "base",
     mc.redis_access_problems, "no NetworkPolicy admits the predictor"),
    # Redis alerts
    ("memory-alert-late", _edit("redis/monitoring.yaml", {"kind": "Rules"}, _rule(
        "AttributionRedisMemoryHigh", lambda r: r.__setitem__("expr", r["expr"].replace("0.8", "0.97")))),
     "base", mc.redis_alert_problems, "used/max memory"),
    ("memory-alert-instant", _edit("redis/monitoring.yaml", {"kind": "Rules"}, _rule(
        "AttributionRedisMemoryHigh", lambda r: r.pop("for"))), "base", mc.redis_alert_problems, "used/max memory"),
    ("oom-alert-gone", _edit("redis/monitoring.yaml", {"kind": "Rules"}, _drop_rule("AttributionRedisRejectedWrites")),
     "base", mc.redis_alert_problems, "OOM"),
    ("exporter-alert-gone", _edit("redis/monitoring.yaml", {"kind": "Rules"}, _drop_rule("AttributionRedisExporterDown")),
     "base", mc.redis_alert_problems, "exporter down"),
    # Predictor: only its clients
    ("public-visibility", _isvc(lambda d: d["metadata"]["labels"].pop("networking.kserve.io/visibility")), "base",
     mc.predictor_access_problems, "cluster-local"),
    ("no-sidecar", _isvc(lambda d: d["spec"]["predictor"]["labels"].pop("sidecar.istio.io/inject")), "base",
     mc.predictor_access_problems, "no Istio sidecar"),
    ("activator-in-path", _isvc(lambda d: d["metadata"]["annotations"].pop("autoscaling.knative.dev/target-burst-capacity")),
     "base", mc.predictor_access_problems, "target-burst-capacity"),
    ("repository-not-denied", _without_deny, "base", mc.predictor_access_problems,
     "no DENY rule covers /v2/repository/models/attribution/unload"),
    ("client-rule-too-broad", _allow(lambda d: d["spec"]["rules"][0]["to"][0]["operation"].__setitem__(
        "paths", ["/v1/*", "/v2/*"])), "base", mc.predictor_access_problems, "a rule admits /v2/repository/index"),
    ("client-wildcard", _allow(lambda d: d["spec"]["rules"][0]["from"][0]["source"].__setitem__("principals", ["*"])),
     "base", mc.predictor_access_problems, "client principals"),
    ("anonymous-scoring", _allow(lambda d: d["spec"]["rules"][-1]["to"][0]["operation"]["paths"].append(
        "/v2/models/attribution/infer")), "base", mc.predictor_access_problems, "more than GET /metrics"),
    ("no-allow-policy", _allow(lambda d: d["spec"].__setitem__("selector", {"matchLabels": {"app": "other"}})),
     "base", mc.predictor_access_problems, "no ALLOW AuthorizationPolicy"),
    ("public-gateway-admitted", _policy("attribution-predictor-ingress", lambda d: d["spec"]["ingress"][1]["from"][0][
        "namespaceSelector"]["matchLabels"].__setitem__("kubernetes.io/metadata.name", "istio-system")), "base",
     mc.predictor_access_problems, "public gateway"),
    ("gmp-cannot-scrape-predictor", _policy("attribution-predictor-ingress", _scrapers(["monitoring"])), "base",
     mc.predictor_access_problems, "gmp-system"),
    ("no-istiod-egress", _policy("attribution-predictor-egress", lambda d: d["spec"]["egress"].pop()), "base",
     mc.predictor_access_problems, "istiod"),
    # Predictor: probes and autoscaling per mode
    ("readiness-on-server", _runtime(lambda d: predictor_container(d)["readinessProbe"]["httpGet"].__setitem__(
        "path", "/v2/health/ready")), "base", mc.predictor_probe_problems, "readinessProbe is on '/v2/health/ready'"),
    ("no-liveness", _runtime(lambda d: predictor_container(d).pop("livenessProbe")), "base", mc.predictor_probe_problems,
     "livenessProbe is on None"),
    # The model server is a ServingRuntime; the model URI is the deploy gate's alone
    ("storage-uri-in-git", _isvc(lambda d: d["spec"]["predictor"]["model"].__setitem__("storageUri", "gs://m/x")),
     "base", mc.serving_runtime_problems, "storageUri is set in git"),
    ("storage-uri-env", _runtime(lambda d: predictor_container(d)["env"].append({"name": "STORAGE_URI", "value": "gs://m/x"})),
     "base", mc.serving_runtime_problems, "carries a STORAGE_URI env"),
    ("unknown-runtime", _isvc(lambda d: d["spec"]["predictor"]["model"].__setitem__("runtime", "kserve-sklearnserver")),
     "base", mc.serving_runtime_problems, "which is not rendered"),
    ("unsupported-format", _runtime(lambda d: d["spec"]["supportedModelFormats"][0].__setitem__("name", "sklearn")),
     "base", mc.serving_runtime_problems, "is not among"),
    ("serverless-no-concurrency", _isvc(lambda d: d["spec"]["predictor"].pop("containerConcurrency")), "base",
     mc.predictor_probe_problems, "Serverless without predictor.containerConcurrency"),
    ("raw-keeps-timeout", _text("components/raw-deployment/kustomization.yaml",
                                "      - op: remove\n        path: /spec/predictor/timeout\n", ""),
     "overlays/prod-raw", mc.predictor_probe_problems, "timeout does nothing in RawDeployment"),
    ("raw-keeps-knative-annotation", _text("components/raw-deployment/kustomization.yaml",
                                           "      - op: remove\n        path: /metadata/annotations/autoscaling.knative.dev~1target-burst-capacity\n", ""),
     "overlays/prod-raw", mc.predictor_probe_problems, "do nothing in RawDeployment"),
    ("raw-concurrency-metric", _text("components/raw-deployment/kustomization.yaml", "value: cpu", "value: concurrency"),
     "overlays/prod-raw", mc.predictor_probe_problems, "HPA: cpu/memory"),
    # Identity, credentials, digests, disruption budgets
    ("wrong-gcp-sa", _edit("serviceaccounts.yaml", {"kind": "ServiceAccount", "name": "attribution-predictor"},
                           lambda d: d["metadata"]["annotations"].__setitem__(
                               "iam.gke.io/gcp-service-account", "owner@PROJECT_ID.iam.gserviceaccount.com")),
     "base", mc.workload_identity_problems, "ServiceAccount/attribution-predictor"),
    ("predictor-runs-as-default-sa", _isvc(lambda d: d["spec"]["predictor"].pop("serviceAccountName")), "base",
     mc.workload_identity_problems, "does not run as ServiceAccount attribution-predictor"),
    ("credential-in-configmap", _edit("configmap.yaml", {"kind": "ConfigMap"}, lambda d: d["data"].__setitem__(
        "STATE_URL", "redis://default:hunter2@attribution-redis:6379/0")), "base", mc.secret_problems, "STATE_URL"),
    ("exporter-digest-missing", _text("overlays/prod/kustomization.yaml", "  - name: oliver006/redis_exporter\n"
                                      "    digest: sha256:0000000000000000000000000000000000000000000000000000000000000005\n", ""),
     "overlays/prod", mc.digest_problems, "redis_exporter"),
    ("pdb-removed-from-prod", _text("overlays/prod/kustomization.yaml", "  - pdb.yaml\n", ""), "overlays/prod",
     mc.pdb_problems, "no PodDisruptionBudget"),
]


@pytest.mark.parametrize("mutation,where,check,expected", [case[1:] for case in OWN_POLICY],
                         ids=[case[0] for case in OWN_POLICY])
def test_own_policy_reports_planted_mistake(tree, mutation, where, check, expected):
    assert check(mc.render(tree / "manifests" / where)) == [], "the unplanted copy must pass"
    mutation(tree)
    problems = check(mc.render(tree / "manifests" / where))
    assert any(expected in p for p in problems), problems


def test_literal_secret(tree):
    (base_file(tree, "secret.yaml")).write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: gcp-key}\nstringData:\n  key.json: x\n")
    replace_text(base_file(tree, "kustomization.yaml"), "  - configmap.yaml\n", "  - configmap.yaml\n  - secret.yaml\n")
    assert any("Secret/gcp-key" in p for p in mc.secret_problems(render(tree)))


def test_pdb_over_a_single_replica(tree):
    dev = tree / "manifests" / "overlays" / "dev"
    (dev / "pdb.yaml").write_text((tree / "manifests" / "overlays" / "prod" / "pdb.yaml").read_text())
    replace_text(dev / "kustomization.yaml", "  - ../../base\n", "  - ../../base\n  - pdb.yaml\n")
    assert any("covers it" in p for p in mc.pdb_problems(mc.render(dev)))


def test_prometheus_operator_alerts_follow_the_gmp_rules(tree):
    """A mistake in base's Rules reaches the PrometheusRule the component copies (written once)."""
    _drop_rule_in_base = _edit("redis/monitoring.yaml", {"kind": "Rules"}, _drop_rule("AttributionRedisRejectedWrites"))
    _drop_rule_in_base(tree)
    problems = mc.redis_alert_problems(render(tree, components=("prometheus-operator",)))
    assert any(p.startswith("PrometheusRule/") and "OOM" in p for p in problems), problems


def test_no_redis_at_all_is_reported(tree):
    replace_text(base_file(tree, "kustomization.yaml"), "  - redis/statefulset.yaml\n", "")
    assert mc.redis_problems(render(tree)) == ["StatefulSet/attribution-redis missing"]
