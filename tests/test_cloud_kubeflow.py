"""Kubeflow profile namespaces: Spark's pods without Istio sidecars, SparkApplications owned by the step's pod
and deleted on timeout or cancel, the pipeline account's exact RBAC (granted verbs = the verbs the code
calls + KFP's and Argo's own), and `pipeline submit/schedule` with --namespace and an IAP ID token from
google-auth. The Kubernetes and KFP clients are recordings with the real signatures."""

from __future__ import annotations

import inspect
import json
import os
import signal
from typing import ClassVar

import pytest
import yaml
from kube_recorder import RecordingCoreV1, RecordingCustomObjects, called_rules, signature_problems
from kubernetes import client as k8s
from manifest_checks import MANIFESTS, crd_problems
from test_deploy_gate import Controller, gate, scorer

from attribution.platform import rbac, spark_submit
from pipelines import cli as pcli

NS = "kubeflow-user-attribution"
OWNER_ENV = {"KFP_POD_NAME": "attribution-train-abc-system-container-impl-123", "KFP_POD_UID": "0b4e-uid"}


def rendered(**kw) -> dict:
    return spark_submit.render_spark_application(
        "gs://attribution-pipeline/run-1/features", "gs://attribution-pipeline/run-1/model", namespace=NS,
        owner=spark_submit.step_pod_owner(OWNER_ENV), **kw)


class SparkOperator:
    """Plays the Spark Operator: each status poll moves the application one state on."""

    def __init__(self, states: list[str]):
        self.states = list(states)

    def on_get(self, obj: dict) -> None:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        obj["status"] = {"applicationState": {"state": state}, "driverInfo": {"podName": obj["metadata"]["name"] + "-driver"}}


def spark_api(states: list[str]) -> RecordingCustomObjects:
    return RecordingCustomObjects(on_get=SparkOperator(states).on_get)


def test_recorders_have_the_real_signatures():
    assert signature_problems(RecordingCustomObjects()) == []
    assert signature_problems(RecordingCoreV1(), k8s.CoreV1Api) == []


def test_spark_pods_have_no_sidecar_and_the_step_pod_owns_the_application():
    doc = rendered()
    assert crd_problems([doc]) == []
    for role in ("driver", "executor"):
        assert doc["spec"][role]["annotations"]["sidecar.istio.io/inject"] == "false"
    (owner,) = doc["metadata"]["ownerReferences"]
    assert owner == {"apiVersion": "v1", "kind": "Pod", "name": OWNER_ENV["KFP_POD_NAME"],
                     "uid": OWNER_ENV["KFP_POD_UID"], "blockOwnerDeletion": False, "controller": False}
    assert spark_submit.step_pod_owner({}) is None  # outside KFP: no owner, and a warning


def test_completed_application_is_kept_and_awaited():
    api = spark_api(["SUBMITTED", "RUNNING", "COMPLETED"])
    result = spark_submit.submit_and_wait(rendered(), api, RecordingCoreV1(), poll_s=0, sleep=lambda s: None)
    assert result.succeeded and not [c for c in api.calls if c[0] == "delete"]


def test_timed_out_application_is_deleted():
    api = spark_api(["RUNNING"])
    now = [0.0]
    with pytest.raises(RuntimeError, match="TIMED_OUT"):
        spark_submit.submit_and_wait(rendered(), api, RecordingCoreV1(), poll_s=60, timeout_s=300,
                                     sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    deletes = [c for c in api.calls if c[0] == "delete"]
    assert len(deletes) == 1 and deletes[0][2] == NS and not api.objects


def test_cancelled_step_deletes_its_application():
    # KFP cancels a run by terminating the step's pod: SIGTERM reaches the waiting step.
    api = spark_api(["RUNNING"])
    before = signal.getsignal(signal.SIGTERM)

    def sleep(_s: float) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(spark_submit.Cancelled):
        spark_submit.submit_and_wait(rendered(), api, RecordingCoreV1(), poll_s=1, sleep=sleep)
    assert [c[0] for c in api.calls].count("delete") == 1 and not api.objects
    assert signal.getsignal(signal.SIGTERM) is before  # the step's own handler is restored


# ---- exact RBAC -------------------------------------------------------------------------------------------------
def exercised_calls() -> dict:
    """Every Kubernetes call path of the code: a Spark run that completes, one that times out, a first
    rollout, a canary promoted and one rolled back."""
    ok, timeout, core = spark_api(["COMPLETED"]), spark_api(["RUNNING"]), RecordingCoreV1()
    spark_submit.submit_and_wait(rendered(), ok, core, poll_s=0, sleep=lambda s: None)
    now = [0.0]
    with pytest.raises(RuntimeError):
        spark_submit.submit_and_wait(rendered(), timeout, core, poll_s=1, timeout_s=2,
                                     sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    isvc = []
    for ready in (True, False):
        api = RecordingCustomObjects(on_get=Controller(ready=ready, after=1).on_get)
        score = scorer({"gs://m/1": {"roc_auc": 0.95, "pr_auc": 0.3}, "gs://m/2": {"roc_auc": 0.97, "pr_auc": 0.3}})
        gate(api, "gs://m/1", score)
        gate(api, "gs://m/2", score)
        isvc.append(api)
    return called_rules(ok, timeout, core, *isvc)


def test_the_code_calls_exactly_the_declared_verbs():
    assert exercised_calls() == rbac.CODE_RULES


def test_declared_role_grants_code_and_platform_verbs_only():
    rules = rbac.granted(rbac.role_rules())
    assert rules[("", "configmaps")] == {"get"}  # kfp-launcher
    assert ("", "pods") not in rules  # nothing reads or patches pods
    assert rules[("sparkoperator.k8s.io", "sparkapplications")] == {"create", "get", "delete"}


def test_the_pipeline_role_in_manifests_grants_exactly_that():
    docs = list(yaml.safe_load_all((MANIFESTS / "base" / "pipeline" / "rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "attribution-pipeline")
    assert rbac.granted(role["rules"]) == rbac.pipeline_rules()


# ---- submit / schedule with a namespace and an IAP ID token ------------------------------------------------------
class RecordingKfpClient:
    """kfp.Client's constructor and the three calls the CLI makes, with kfp's own signatures."""
    instances: ClassVar[list] = []

    def __init__(self, host=None, client_id=None, namespace="kubeflow", other_client_id=None,
                 other_client_secret=None, existing_token=None, cookies=None, proxy=None, ssl_ca_cert=None,
                 kube_context=None, credentials=None, ui_host=None, verify_ssl=None):
        self.init = {"host": host, "namespace": namespace, "existing_token": existing_token}
        self.calls: list = []
        RecordingKfpClient.instances.append(self)

    def create_run_from_pipeline_package(self, pipeline_file, arguments=None, run_name=None, experiment_name=None,
                                         namespace=None, pipeline_root=None, enable_caching=None, cache_key=None,
                                         service_account=None, experiment_id=None):
        self.calls.append(("run", {"namespace": namespace, "service_account": service_account}))
        return type("R", (), {"run_id": "run-1"})()

    def create_experiment(self, name, description=None, namespace=None):
        self.calls.append(("experiment", {"name": name, "namespace": namespace}))
        return type("E", (), {"experiment_id": "exp-1"})()

    def create_recurring_run(self, experiment_id, job_name, description=None, start_time=None, end_time=None,
                             interval_second=None, cron_expression=None, max_concurrency=1, no_catchup=None,
                             params=None, pipeline_package_path=None, pipeline_id=None, version_id=None,
                             enabled=True, pipeline_root=None, enable_caching=None, cache_key=None,
                             service_account=None):
        self.calls.append(("recurring", {"experiment_id": experiment_id, "cron": cron_expression}))
        return type("J", (), {"recurring_run_id": "job-1"})()


def test_recording_kfp_client_has_kfp_signatures():
    import kfp

    for name in ("__init__", "create_run_from_pipeline_package", "create_experiment", "create_recurring_run"):
        ours = list(inspect.signature(getattr(RecordingKfpClient, name)).parameters)
        theirs = list(inspect.signature(getattr(kfp.Client, name)).parameters)
        assert ours == theirs, name


class RecordingTransport:
    """google-auth's transport interface (google.auth.transport.Request), recording the token exchange."""

    def __init__(self):
        self.requests: list[dict] = []

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        self.requests.append({"url": url, "method": method, "body": body})
        payload = json.dumps({"id_token": _unsigned_jwt({"aud": "iap-client.apps.googleusercontent.com",
                                                           "exp": 4102444800, "iat": 0})}).encode()
        return type("Resp", (), {"status": 200, "headers": {}, "data": payload})()


def _unsigned_jwt(claims: dict) -> str:
    import base64

    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(claims)}.c2ln"


@pytest.fixture
def service_account_file(tmp_path, monkeypatch):
    """A service-account key made here (never a real one), as GOOGLE_APPLICATION_CREDENTIALS."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "p", "private_key_id": "k1", "private_key": pem,
        "client_email": "pipeline-submitter@p.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "https://oauth2.example.invalid/token"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    return path


def parse(argv):
    from attribution.cli import build_parser

    return build_parser().parse_args(argv)


def test_submit_with_namespace_and_an_iap_token_minted_by_google_auth(service_account_file, monkeypatch):
    transport = RecordingTransport()
    token = pcli.id_token_for("iap-client.apps.googleusercontent.com", request=transport)
    (req,) = transport.requests
    assert req["method"] == "POST" and req["url"] == "https://oauth2.example.invalid/token"
    assert b"jwt-bearer" in req["body"]  # a signed assertion from the key, target_audience = the IAP client
    c = pcli.client("https://kf.example.com/pipeline", NS, "iap-client.apps.googleusercontent.com",
                    client_cls=RecordingKfpClient, fetch=lambda request, audience: token)
    assert c.init == {"host": "https://kf.example.com/pipeline", "namespace": NS, "existing_token": token}

    a = parse(["pipeline", "submit", "--host", "https://kf.example.com/pipeline", "--namespace", NS,
               "--param", "data=p.d.clicks"])
    assert pcli.submit_cmd(a, c) == "run-1" and c.calls[-1] == ("run", {"namespace": NS,
                                                                       "service_account": "attribution-pipeline"})
    a = parse(["pipeline", "schedule", "--host", "h", "--namespace", NS, "--cron", "0 0 3 * * *",
               "--param", "data=p.d.clicks"])
    assert pcli.schedule_cmd(a, c) == "job-1"
    assert ("experiment", {"name": "attribution", "namespace": NS}) in c.calls


def test_missing_credentials_name_what_to_set(monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    with pytest.raises(RuntimeError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        pcli.id_token_for("iap-client", request=RecordingTransport())
