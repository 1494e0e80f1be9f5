"""`attribution pipeline compile|submit|schedule`: the pipeline on a Kubeflow Pipelines cluster.

    attribution pipeline compile [--output pipelines/attribution_pipeline.yaml]
    attribution pipeline submit   --host URL --namespace PROFILE [--iap-client-id ID] [--param k=v ...]
    attribution pipeline schedule --host URL --namespace PROFILE --cron "0 0 3 * * *" [--param days_back=3 ...]
    attribution pipeline schedule --host URL --namespace PROFILE --on-evidence --alertmanager URL --max-age-days 7

Behind IAP (Kubeflow on GKE), --iap-client-id makes google-auth mint an ID token for that audience from
the caller's Application Default Credentials (a service account's key file, Workload Identity or the
metadata server): nothing is stored, nothing is passed on the command line.

submit and schedule compile the current code into a temporary package first (the checked-in YAML is
for review and diffing; a test keeps it current), and run as the `attribution-pipeline` service account.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from datetime import UTC
from pathlib import Path

log = logging.getLogger(__name__)
DEFAULT_EXPERIMENT = "attribution"
DEFAULT_SERVICE_ACCOUNT = "attribution-pipeline"


def parse_params(items: list[str] | None) -> dict:
    """k=v pairs; values that read as JSON numbers/booleans become those (KFP checks the types)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param wants KEY=VALUE, got {item!r}")
        try:
            parsed = json.loads(value)
            out[key] = parsed if isinstance(parsed, (int, float, bool)) else value
        except json.JSONDecodeError:
            out[key] = value
    return out


def check_params(params: dict) -> None:
    from pipelines.attribution_pipeline import attribution_pipeline

    known = set(attribution_pipeline.component_spec.inputs or {})
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown pipeline parameter(s) {unknown}; the pipeline takes {sorted(known)}")


def id_token_for(audience: str, fetch=None, request=None) -> str:
    """An ID token for the IAP client id `audience` from google-auth's default credentials."""
    from google.auth import exceptions

    if fetch is None:
        from google.oauth2.id_token import fetch_id_token as fetch
    if request is None:
        from google.auth.transport.requests import Request

        request = Request()
    try:
        return fetch(request, audience)
    except exceptions.DefaultCredentialsError as err:
        raise RuntimeError(
            f"no credentials can mint an ID token for the IAP client id {audience}: set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service account allowed through IAP, or run on GCP with "
            f"Workload Identity ({err})"
        ) from err


def client(host: str, namespace: str | None = None, iap_client_id: str | None = None, client_cls=None, fetch=None):
    """kfp.Client for host, in the profile namespace, with an IAP ID token when iap_client_id is given."""
    if client_cls is None:
        import kfp

        client_cls = kfp.Client
    kwargs: dict = {"host": host}
    if namespace:
        kwargs["namespace"] = namespace
    if iap_client_id:
        kwargs["existing_token"] = id_token_for(iap_client_id, fetch)
    return client_cls(**kwargs)


def _package(tmp: str) -> str:
    from pipelines.attribution_pipeline import compile_pipeline

    return str(compile_pipeline(Path(tmp) / "attribution_pipeline.yaml"))


def use_images(build_output: str | None, registry: str | None, image_tag: str | None) -> None:
    """Point attribution.platform.images at what was built, before the components are defined."""
    import importlib
    import os
    import sys

    from attribution.platform import images

    wanted = {images.BUILD_OUTPUT_ENV: build_output and str(Path(build_output).resolve()),
              images.REGISTRY_ENV: registry, images.TAG_ENV: image_tag}
    for key, value in wanted.items():
        if value:
            os.environ[key] = value
    if any(wanted.values()) and "components" in sys.modules:
        raise RuntimeError("the components were defined before the image settings: compile in a fresh process")
    importlib.reload(images)  # PIPELINE_IMAGE & co. are read once, at import: read them again now
    for name in images.NAMES:
        images.image(name)  # fail now on a build output without one of the images


def compile_cmd(a: argparse.Namespace) -> None:
    use_images(a.build_output, a.registry, a.image_tag)
    from pipelines.attribution_pipeline import compile_pipeline

    path = compile_pipeline(a.output)
    log.info("compiled the pipeline to %s", path)
    print(path)


def submit_cmd(a: argparse.Namespace, kfp_client=None) -> str:
    params = parse_params(a.param)
    check_params(params)
    c = kfp_client or client(a.host, a.namespace, a.iap_client_id)
    with tempfile.TemporaryDirectory() as tmp:
        run = c.create_run_from_pipeline_package(
            _package(tmp), arguments=params, run_name=a.run_name, experiment_name=a.experiment,
            namespace=a.namespace, pipeline_root=a.pipeline_root, service_account=a.service_account,
        )
    log.info("submitted run %s to %s (experiment %s)", run.run_id, a.host, a.experiment)
    print(run.run_id)
    return run.run_id


def last_run_at(c, experiment: str, namespace: str | None):
    """When the experiment's latest run was created (None if it has none, or the experiment does not exist)."""
    try:
        exp = c.get_experiment(experiment_name=experiment, namespace=namespace)
    except Exception:  # noqa: BLE001 - kfp raises its API's own error for "not found"
        return None
    runs = c.list_runs(experiment_id=exp.experiment_id, sort_by="created_at desc", page_size=1).runs or []
    return runs[0].created_at if runs else None


def evidence_cmd(a: argparse.Namespace, kfp_client=None, firing: list[str] | None = None, now=None) -> str | None:
    """One retraining run when a retraining alert fires or the last run is --max-age-days old; else nothing.
    Started periodically (the CronJob in manifests/base/monitor/), so evidence, not the calendar, decides."""
    from datetime import datetime

    from attribution.monitoring.evidence import decide_retrain, firing_alerts

    params = parse_params(a.param)
    params.setdefault("days_back", a.days_back)
    check_params(params)
    c = kfp_client or client(a.host, a.namespace)
    if firing is None:
        firing = firing_alerts(a.alertmanager) if a.alertmanager else []
    decision = decide_retrain(firing, last_run_at(c, a.experiment, a.namespace), now or datetime.now(UTC),
                              a.max_age_days)
    log.info("retrain: %s (%s)", "yes" if decision.retrain else "no", decision.reason)
    if not decision.retrain:
        print(f"no run: {decision.reason}")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        run = c.create_run_from_pipeline_package(
            _package(tmp), arguments=params, run_name=f"retrain-on-evidence: {decision.reason}"[:120],
            experiment_name=a.experiment, namespace=a.namespace, pipeline_root=a.pipeline_root,
            service_account=a.service_account,
        )
    print(run.run_id)
    return run.run_id


def schedule_cmd(a: argparse.Namespace, kfp_client=None) -> str | None:
    if a.on_evidence:
        return evidence_cmd(a, kfp_client)
    if not a.cron:
        raise ValueError("schedule needs --cron (a recurring run) or --on-evidence (one run when evidence says so)")
    params = parse_params(a.param)
    params.setdefault("days_back", a.days_back)
    check_params(params)
    c = kfp_client or client(a.host, a.namespace, a.iap_client_id)
    experiment = c.create_experiment(a.experiment, namespace=a.namespace)
    with tempfile.TemporaryDirectory() as tmp:
        job = c.create_recurring_run(
            experiment_id=experiment.experiment_id, job_name=a.name, cron_expression=a.cron,
            max_concurrency=1, no_catchup=True, params=params, pipeline_package_path=_package(tmp),
            pipeline_root=a.pipeline_root, service_account=a.service_account,
            description=f"retrain daily on the last {params['days_back']} days",
        )
    log.info("scheduled recurring run %s (%s) on %s", job.recurring_run_id, a.cron, a.host)
    print(job.recurring_run_id)
    return job.recurring_run_id


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    c = sub.add_parser("compile", help="write the pipeline's IR YAML", formatter_class=fmt)
    c.add_argument("--output", default=str(Path(__file__).resolve().with_name("attribution_pipeline.yaml")))
    c.add_argument("--build-output", default=None,
                   help="skaffold's `build --file-output` JSON: compile with the images it built (by digest)")
    c.add_argument("--registry", default=None, help="image registry, e.g. us-docker.pkg.dev/PROJ/attribution")
    c.add_argument("--image-tag", default=None, help="image tag or digest (sha256:...)")
    c.set_defaults(pipeline_func=compile_cmd)

    def cluster(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline")
        p.add_argument("--namespace", default=None, help="Kubeflow profile namespace (multi-user installs)")
        p.add_argument("--iap-client-id", default=None,
                       help="OAuth client id of the IAP in front of Kubeflow: an ID token for it from google-auth")
        p.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
        p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                       help="pipeline parameter, repeatable (data=..., feature_engine=bigquery, trainer=spark, ...)")
        p.add_argument("--pipeline-root", default=None, help="gs://... for the artifacts (default: the cluster's)")
        p.add_argument("--service-account", default=DEFAULT_SERVICE_ACCOUNT)

    s = sub.add_parser("submit", help="one run on a KFP cluster", formatter_class=fmt)
    cluster(s)
    s.add_argument("--run-name", default=None)
    s.set_defaults(pipeline_func=submit_cmd)

    r = sub.add_parser("schedule", help="a recurring run retraining on a sliding range of days", formatter_class=fmt)
    cluster(r)
    r.add_argument("--cron", default=None, help='KFP cron with seconds, e.g. "0 0 3 * * *" (03:00 UTC daily)')
    r.add_argument("--on-evidence", action="store_true",
                   help="instead of a recurring run: submit one run now if a retraining alert fires or the last "
                        "run is --max-age-days old (start this periodically, e.g. the monitor's CronJob)")
    r.add_argument("--alertmanager", default=None, help="Alertmanager URL whose active alerts are the evidence")
    r.add_argument("--max-age-days", type=float, default=7.0, help="retrain at least this often")
    r.add_argument("--name", default="attribution-daily", help="recurring run name")
    r.add_argument("--days-back", type=int, default=3, help="train on this many whole days before the run's day")
    r.set_defaults(pipeline_func=schedule_cmd)


def dispatch(a: argparse.Namespace) -> None:
    a.pipeline_func(a)
