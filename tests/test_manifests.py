"""Offline validation of the deployment: the real manifests, images and skaffold.yaml pass every check
(kustomize, kubernetes-validate, the vendored CRDs, check-jsonschema, hadolint, checkov, our own policy),
and the contracts between images, manifests and the package hold.

The checks live in tests/manifest_checks.py; tests/test_manifest_mistakes.py plants a mistake for each
of them into a temp copy and shows it is reported. No cluster, Docker daemon or network is needed.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manifest_checks as mc

needs_schemas = pytest.mark.skipif(
    not mc.SCHEMAS.is_dir(),
    reason=f"CRD / skaffold schemas not found at {mc.SCHEMAS}",
)
KUSTOMIZE_DIRS = mc.kustomize_dirs()
COMPONENTS = mc.components()
# Every overlay, and base with each component on top (a component no overlay uses is checked too).
DIR_IDS = [str(d.relative_to(mc.MANIFESTS)) for d in KUSTOMIZE_DIRS] + [f"base+{c.name}" for c in COMPONENTS]
DOCKERFILES = mc.dockerfiles()


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    out = {str(d.relative_to(mc.MANIFESTS)): mc.render(d) for d in KUSTOMIZE_DIRS}
    out |= {f"base+{c.name}": mc.render(mc.MANIFESTS / "base", [c]) for c in COMPONENTS}
    return out


def by_kind(docs, kind, name=None):
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert hits, f"no {kind} {name or ''} rendered"
    return hits


def isvc(docs):
    return by_kind(docs, "InferenceService", "attribution")[0]


def spark_app(docs):
    return by_kind(docs, "SparkApplication", "attribution-train")[0]


def runtime_container(docs):
    """The model server's container: the ServingRuntime's kserve-container, as the predictor pod gets it."""
    return next(c for c in mc.predictor_containers(docs, isvc(docs)) if c["name"] == "kserve-container")


# ================================================================================ real files pass
def test_layout_has_base_overlays_and_components():
    assert DIR_IDS[0] == "base" and {"overlays/dev", "overlays/prod", "overlays/prod-raw"} <= set(DIR_IDS)
    assert {"base+raw-deployment", "base+prometheus-operator"} <= set(DIR_IDS)
    assert {"pipeline.Dockerfile", "spark.Dockerfile", "serving.Dockerfile"} <= {p.name for p in DOCKERFILES}


@pytest.mark.parametrize("path", KUSTOMIZE_DIRS, ids=[str(d.relative_to(mc.MANIFESTS)) for d in KUSTOMIZE_DIRS])
def test_kustomize_renders(path):
    assert mc.render_problems(path) == []


@pytest.mark.parametrize("name", DIR_IDS)
def test_core_resources_pass_kubernetes_validate_strict(rendered, name):
    assert mc.kubernetes_validate_problems(rendered[name]) == []


@needs_schemas
@pytest.mark.parametrize("name", DIR_IDS)
def test_custom_resources_pass_strict_crd_schemas(rendered, name):
    kinds = {d["kind"] for d in rendered[name]}
    assert {"InferenceService", "SparkApplication", "AuthorizationPolicy", "PodMonitoring", "Rules"} <= kinds
    assert mc.crd_problems(rendered[name]) == []


@needs_schemas
def test_sparkapplication_template_file_is_valid_on_its_own(rendered):
    """The pipeline component reads this file directly (not through kustomize); it runs under base's
    NetworkPolicies."""
    path = mc.MANIFESTS / "base" / "spark-training" / "sparkapplication.yaml"
    docs = mc.load_yaml_docs(path)
    assert [d["kind"] for d in docs] == ["SparkApplication"]
    assert mc.crd_problems(docs) == []
    assert mc.checkov_kubernetes_problems(docs + mc.find(rendered["base"], "NetworkPolicy")) == []
    assert "suspend" not in docs[0]["spec"], "the template itself must run when the pipeline submits it"


@needs_schemas
def test_skaffold_config_is_valid_and_paths_exist():
    assert mc.skaffold_problems() == []


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_dockerfile_passes_hadolint(dockerfile):
    assert mc.hadolint_problems(dockerfile) == []


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_dockerfile_policy(dockerfile):
    assert mc.dockerfile_policy_problems(dockerfile) == []


def test_dockerfiles_pass_checkov():
    assert mc.checkov_dockerfile_problems() == []


@pytest.mark.parametrize("name", DIR_IDS)
def test_workloads_pass_checkov(rendered, name):
    """Resources, securityContext, probes, image tags, RBAC... on every workload and on the pods the
    InferenceService and the SparkApplication become (manifests/checkov.yaml says what is skipped)."""
    assert mc.checkov_kubernetes_problems(rendered[name]) == []


@pytest.mark.parametrize("name", [n for n in DIR_IDS if n.startswith("overlays/prod")])
def test_prod_pins_every_image_by_digest(rendered, name):
    assert mc.digest_problems(rendered[name]) == []


@pytest.mark.parametrize("name", DIR_IDS)
def test_workload_identity(rendered, name):
    assert mc.workload_identity_problems(rendered[name]) == []


@pytest.mark.parametrize("name", DIR_IDS)
def test_no_literal_credentials(rendered, name):
    assert mc.secret_problems(rendered[name]) == []


@pytest.mark.parametrize("name", DIR_IDS)
def test_pdb_only_where_more_than_one_replica(rendered, name):
    assert mc.pdb_problems(rendered[name]) == []


@pytest.mark.parametrize("name", DIR_IDS)
def test_redis_sized_persisted_and_watched(rendered, name):
    assert mc.redis_problems(rendered[name]) == []
    assert mc.redis_alert_problems(rendered[name]) == []


@pytest.mark.parametrize("name", DIR_IDS)
def test_redis_reachable_only_from_the_predictor(rendered, name):
    assert mc.redis_access_problems(rendered[name]) == []


@pytest.mark.parametrize("name", DIR_IDS)
def test_predictor_reachable_only_by_its_clients(rendered, name):
    assert mc.predictor_access_problems(rendered[name]) == []


@pytest.mark.parametrize("name", DIR_IDS)
def test_predictor_probes_and_autoscaling_fit_the_mode(rendered, name):
    assert mc.predictor_probe_problems(rendered[name]) == []


@pytest.mark.parametrize("name", DIR_IDS)
def test_model_server_is_a_serving_runtime_and_the_model_uri_is_the_gates(rendered, name):
    assert mc.serving_runtime_problems(rendered[name]) == []


# ====================================================================== the contracts, spelled out
def test_inferenceservice_contract(rendered):
    for name, docs in rendered.items():
        doc = isvc(docs)
        assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "attribution-predictor"
        pred = doc["spec"]["predictor"]
        assert pred["labels"]["app.kubernetes.io/name"] == "attribution-predictor"
        assert pred["serviceAccountName"] == "attribution-predictor"
        for key in ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget"):
            assert key in pred, f"{name}: predictor.{key} missing"
        assert 1 <= pred["minReplicas"] <= pred["maxReplicas"], "minReplicas >= 1 keeps the activator out of the path"
        assert "containers" not in pred and pred["model"] == {"modelFormat": {"name": "attribution"},
                                                               "runtime": "attribution"}, "no storageUri in git"
        runtime = by_kind(docs, "ServingRuntime", "attribution")[0]
        [c] = runtime["spec"]["containers"]
        assert c["name"] == "kserve-container" and runtime_container(docs) == c
        assert re.search(r"(^|/)attribution-serving[:@]", c["image"])
        assert c["args"] == ["--model_name=attribution", "--model_dir=/mnt/models", "--http_port=8080",
                             "--state=$(STATE_URL)"]
        assert "command" not in c, "the image's ENTRYPOINT (python -m serving) must stay in charge"
        env = {e["name"]: e for e in c["env"]}
        assert env["STATE_URL"]["valueFrom"]["configMapKeyRef"] == {"name": "attribution-config", "key": "STATE_URL"}
        assert "STORAGE_URI" not in env, "the model URI is spec.predictor.model.storageUri, set by the gate"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert c[probe]["httpGet"] == {"path": "/v2/models/attribution/ready", "port": 8080}
        assert c["livenessProbe"]["periodSeconds"] * c["livenessProbe"]["failureThreshold"] >= 60, \
            "liveness restarts a pod only after a minute without its model"
        cm = by_kind(docs, "ConfigMap", "attribution-config")[0]
        assert cm["data"]["STATE_URL"] == "redis://attribution-redis:6379/0"
    assert isvc(rendered["overlays/dev"])["spec"]["predictor"]["minReplicas"] == 1
    assert isvc(rendered["overlays/prod"])["spec"]["predictor"]["minReplicas"] > 1
    assert not [d for d in rendered["overlays/dev"] if d["kind"] == "PodDisruptionBudget"]
    assert by_kind(rendered["overlays/prod"], "PodDisruptionBudget")
    modes = {n: mc.predictor_mode(isvc(d)) for n, d in rendered.items()}
    assert modes["overlays/prod-raw"] == modes["base+raw-deployment"] == "RawDeployment"
    assert modes["base"] == modes["overlays/dev"] == modes["overlays/prod"] == "Serverless"
    assert runtime_container(rendered["overlays/dev"])["resources"]["limits"]["memory"] == "1Gi"


def test_redis_contract(rendered):
    for name, docs in rendered.items():
        sts = by_kind(docs, "StatefulSet", "attribution-redis")[0]
        [claim] = sts["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        svc = by_kind(docs, "Service", "attribution-redis")[0]
        assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("redis", 6379), ("metrics", 9121)]
        containers = {c["name"]: c for c in sts["spec"]["template"]["spec"]["containers"]}
        assert set(containers) == {"redis", "redis-exporter"}
        assert containers["redis-exporter"]["env"] == [{"name": "REDIS_ADDR", "value": "redis://localhost:6379"}]
        flags = mc.redis_flags(mc.expand_args(containers["redis"]))
        assert flags["save"] == "", f"{name}: the AOF is the persistence; no RDB snapshots"
    sizes = {n: mc.redis_memory_bytes(mc.redis_flags(mc.expand_args(
        by_kind(rendered[n], "StatefulSet", "attribution-redis")[0]["spec"]["template"]["spec"]["containers"][0]))["maxmemory"])
        for n in ("overlays/dev", "base", "overlays/prod")}
    assert sizes["overlays/dev"] < sizes["base"] < sizes["overlays/prod"], sizes
    prod = by_kind(rendered["overlays/prod"], "StatefulSet", "attribution-redis")[0]["metadata"]["annotations"]
    assert int(prod["attribution/sizing-clicks-per-window"]) == 20_000_000, "TalkingData's full rate (docs/deploy.md)"
    assert int(prod["attribution/sizing-key-groups"]) == 6


def test_monitoring_stacks_carry_the_same_alerts(rendered):
    """The Prometheus Operator component copies the GMP rule groups, so an alert is written once."""
    docs = rendered["base+prometheus-operator"]
    gmp = by_kind(docs, "Rules", "attribution-redis")[0]["spec"]["groups"]
    operator = by_kind(docs, "PrometheusRule", "attribution-redis")[0]["spec"]["groups"]
    assert operator == gmp and gmp[0]["rules"]
    monitor = by_kind(docs, "ServiceMonitor", "attribution-redis")[0]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_sparkapplication_contract(rendered):
    for name, docs in rendered.items():
        spec = spark_app(docs)["spec"]
        assert spec["type"] == "Python" and spec["sparkVersion"] == "4.0.0"
        assert spec["mainApplicationFile"] == "local:///app/attribution/training/spark_job.py"
        assert spec["arguments"][0::2] == ["--input", "--model-dir"]
        assert spec["driver"]["serviceAccount"] == "attribution-spark"
        assert spec["executor"]["instances"] >= 1
        assert spec.get("suspend") is True, f"{name}: the applied template must not start a run by itself"
        assert re.search(r"(^|/)attribution-spark[:@]", spec["image"])
    base = spark_app(rendered["base"])["spec"]
    assert base["arguments"] == ["--input", "gs://attribution-data/features/",
                                 "--model-dir", "gs://attribution-models/attribution/candidate"]


def test_service_accounts_and_rbac(rendered):
    for docs in rendered.values():
        assert all(d["metadata"].get("namespace") == "attribution" for d in docs if d["kind"] != "Namespace")
        assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")], "RBAC is namespaced"
        roles = {d["metadata"]["name"]: d for d in by_kind(docs, "Role")}
        rules = roles["attribution-pipeline"]["rules"]

        def verbs(group, resource, rules=rules):
            return {v for r in rules if group in r["apiGroups"] and resource in r["resources"]
                    for v in r["verbs"]}

        assert verbs("sparkoperator.k8s.io", "sparkapplications") == {"create", "get", "delete"}  # platform/rbac.py
        assert {"get", "patch", "create"} <= verbs("serving.kserve.io", "inferenceservices")
        driver = roles["attribution-spark-driver"]["rules"]
        assert {"pods", "services", "configmaps", "persistentvolumeclaims"} <= {r for x in driver for r in x["resources"]}
        bindings = {d["metadata"]["name"]: d for d in by_kind(docs, "RoleBinding")}
        assert bindings["attribution-pipeline"]["subjects"][0]["name"] == "attribution-pipeline"
        assert bindings["attribution-spark-driver"]["subjects"][0]["name"] == "attribution-spark"


def test_network_policies_default_deny_and_allows(rendered):
    for docs in rendered.values():
        policies = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "NetworkPolicy")}
        deny = policies["default-deny-all"]
        assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
        assert "ingress" not in deny and "egress" not in deny
        dns = policies["allow-dns-egress"]["egress"][0]["ports"]
        assert {("UDP", 53), ("TCP", 53)} <= {(p["protocol"], p["port"]) for p in dns}
        clients = policies["attribution-predictor-ingress"]["ingress"][0]["from"]
        assert clients == [{"namespaceSelector": {"matchLabels": {"attribution/predictor-client": "true"}}}]
        to_redis = policies["attribution-predictor-egress"]["egress"][0]
        assert to_redis["ports"] == [{"protocol": "TCP", "port": 6379}]
        spark = policies["attribution-spark"]
        assert set(spark["policyTypes"]) == {"Ingress", "Egress"}
        pipeline_ports = {p["port"] for r in policies["attribution-pipeline-egress"]["egress"] for p in r.get("ports", [])}
        assert 443 in pipeline_ports


def test_prod_pins_every_image_by_digest_and_dev_uses_skaffold_artifacts(rendered):
    prod = mc.images(rendered["overlays/prod"])
    assert prod and all(mc.DIGEST_RE.search(img) for _, img in prod), prod
    artifacts = {a["image"] for a in yaml.safe_load(mc.SKAFFOLD.read_text())["build"]["artifacts"]}
    assert artifacts == {"attribution-pipeline", "attribution-spark", "attribution-serving"}
    dev_names = {img.split(":")[0] for _, img in mc.images(rendered["overlays/dev"])}
    assert {"attribution-serving", "attribution-spark"} <= dev_names, \
        "dev must use skaffold's artifact names so `skaffold run -p dev` substitutes the built images"
    base = {img for _, img in mc.images(rendered["base"]) if "attribution-" in img}
    version = re.search(r'__version__\s*=\s*"([^"]+)"', (mc.REPO / "attribution" / "__init__.py").read_text())[1]
    assert base == {f"us-docker.pkg.dev/PROJECT_ID/attribution/attribution-{n}:{version}" for n in ("serving", "spark")}


def test_skaffold_profiles_select_overlays():
    config = yaml.safe_load(mc.SKAFFOLD.read_text())
    assert config["apiVersion"] == "skaffold/v4beta13"
    assert "gitCommit" in config["build"]["tagPolicy"]
    assert "kubectl" in config["deploy"]
    profiles = {p["name"]: p["manifests"]["kustomize"]["paths"] for p in config["profiles"]}
    # one profile per overlay, each deploying its own
    overlays = sorted(d.name for d in (mc.MANIFESTS / "overlays").iterdir() if (d / "kustomization.yaml").is_file())
    assert profiles == {name: [f"manifests/overlays/{name}"] for name in overlays}
    for art in config["build"]["artifacts"]:
        assert art["context"] == "."
        assert art["docker"]["dockerfile"] == f"images/{art['image'].removeprefix('attribution-')}.Dockerfile"


# ============================================================= images <-> manifests <-> package
def test_serving_entrypoint_matches_inferenceservice(rendered):
    final = mc.final_stage(mc.IMAGES / "serving.Dockerfile")
    entry = [mc.exec_form(rest) for ins, rest in final if ins == "ENTRYPOINT"]
    assert entry and entry[-1] == ["python", "-m", "serving"]
    exposed = {int(p.split("/")[0]) for ins, rest in final if ins == "EXPOSE" for p in rest.split()}
    c = runtime_container(rendered["base"])
    flags = dict(a.split("=", 1) for a in c["args"])
    port = int(flags["--http_port"])
    assert port in exposed and c["ports"][0]["containerPort"] == port
    assert c["readinessProbe"]["httpGet"]["port"] == port
    assert flags["--model_dir"] == "/mnt/models", "KServe's storage initializer downloads to /mnt/models"
    assert re.fullmatch(r"\$\((\w+)\)", flags["--state"])[1] in {e["name"] for e in c["env"]}
    # Every flag is one the entry point's parser takes (kserve's own, serving/__main__.py's, the shared state
    # flags of attribution/features/online/flags.py).
    from serving.__main__ import parser

    known = {s for action in parser._actions for s in action.option_strings}
    assert not [f for f in flags if f not in known], f"python -m serving does not take {[f for f in flags if f not in known]}"


def copy_destinations(dockerfile: Path) -> list[tuple[str, str]]:
    """(source, destination) of every COPY in the final stage that copies from the build context."""
    out = []
    for ins, rest in mc.final_stage(dockerfile):
        if ins != "COPY" or "--from=" in rest:
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        out += [(src, parts[-1]) for src in parts[:-1]]
    return out


def test_spark_main_file_is_where_the_image_copies_the_package(rendered):
    main = spark_app(rendered["base"])["spec"]["mainApplicationFile"]
    assert main.startswith("local://")
    in_image = main.removeprefix("local://")
    sources = [src.rstrip("/") + "/" + in_image.removeprefix(dest.rstrip("/") + "/")
               for src, dest in copy_destinations(mc.IMAGES / "spark.Dockerfile")
               if in_image.startswith(dest.rstrip("/") + "/")]
    assert sources == ["attribution/training/spark_job.py"], f"{in_image} is not copied into the image: {sources}"
    entry = [mc.exec_form(rest) for ins, rest in mc.final_stage(mc.IMAGES / "spark.Dockerfile") if ins == "ENTRYPOINT"]
    assert entry[-1] == ["/opt/entrypoint.sh"]
    script = (mc.IMAGES / "spark-entrypoint.sh").read_text()
    syntax = mc.run(["bash", "-n", str(mc.IMAGES / "spark-entrypoint.sh")])
    assert syntax.returncode == 0, syntax.stderr
    assert "driver)" in script and "executor)" in script and "KubernetesExecutorBackend" in script
    if not (mc.REPO / sources[0]).exists():
        pytest.skip(f"{sources[0]} not written yet (the Spark training job); the image would lack it")


def test_dockerignore_keeps_what_the_dockerfiles_copy():
    ignore = (mc.REPO / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for dockerfile in DOCKERFILES:
        for ins, rest in mc.dockerfile_instructions(dockerfile):
            if ins != "COPY" or "--from=" in rest:
                continue
            parts = [p for p in rest.split() if not p.startswith("--")]
            for src in parts[:-1]:
                src = src.rstrip("/").removeprefix("./")
                assert any(src == a or src.startswith(a + "/") or Path(src).match(a) for a in allowed), \
                    f"{dockerfile.name} copies {src}, which .dockerignore excludes"


def _filter_lock_module():
    spec = importlib.util.spec_from_file_location("filter_lock", mc.IMAGES / "filter_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _closure(roots: list[str]) -> set[str]:
    """Installed-distribution closure of requirement strings (markers and extras evaluated)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen, stack = set(), [Requirement(r) for r in roots]
    while stack:
        req = stack.pop()
        key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        envs = [{"extra": e} for e in req.extras] + [{"extra": ""}]
        for line in dist.requires or []:
            dep = Requirement(line)
            if dep.marker is None or any(dep.marker.evaluate(env) for env in envs):
                stack.append(dep)
    return {name for name, _ in seen}


@pytest.mark.parametrize("image,excludes,training_only", [
    ("pipeline", ["exclude-dev.txt"], set()),
    ("spark", ["exclude-dev.txt"], set()),
    ("serving", ["exclude-dev.txt", "exclude-serving.txt"], {"pyspark", "kfp", "hyperopt", "matplotlib"}),
])
def test_image_requirements_cover_what_the_image_runs(image, excludes, training_only):
    """The trimmed lock an image installs still holds every dependency of the code it runs."""
    fl = _filter_lock_module()
    assert f"images/{excludes[-1]}" in (mc.IMAGES / f"{image}.Dockerfile").read_text()
    excluded = set().union(*(fl.read_names(mc.IMAGES / e) for e in excludes))
    lock = (mc.REPO / "requirements.lock").read_text().splitlines()
    kept = {fl.canonical(re.split(r"[=<>!~\[;@ ]", s, maxsplit=1)[0]) for s in fl.filter_lock(lock, excluded)}
    deps = tomllib.loads((mc.REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    roots = [d for d in deps if fl.canonical(re.split(r"[=<>!~\[;@ ]", d, maxsplit=1)[0]) not in training_only]
    locked = {fl.canonical(l.split("==")[0]) for l in lock if "==" in l}
    missing = (_closure(roots) & locked) - kept
    assert not missing, f"{image} image excludes packages its code needs: {sorted(missing)}"


def test_manifest_images_match_attribution_images_module(rendered):
    """attribution/platform/images.py is the one place the image names and tag are written in code."""
    images = importlib.import_module("attribution.platform.images")
    spark = spark_app(rendered["base"])["spec"]["image"]
    serving = runtime_container(rendered["base"])["image"]
    assert (images.SPARK_IMAGE, images.SERVING_IMAGE) == (spark, serving)
    assert images.PIPELINE_IMAGE == serving.replace("attribution-serving", "attribution-pipeline")
