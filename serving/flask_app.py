"""The Flask app over the same inference core, served by gunicorn.

    POST /predict           {"clicks": [click, ...]}              -> {"probabilities": [p, ...]}
    POST /talkingdata-api   {"attrPredictRequest": [click, ...]}  -> {"probabilities": [p, ...]}  (the seed's route)
    GET  /healthz           200 when the model is loaded and the state answers, else 503 with the reason
    GET  /openapi.json      the OpenAPI 3 document
    GET  /metrics           Prometheus text

Every client mistake (malformed JSON, wrong Content-Type, missing/extra/invalid field, empty or oversized
batch, too large a body) is a 4xx whose JSON body says what was wrong, and never touches the state.
`run_gunicorn` serves the app; each worker builds its own app (and core) after the fork.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from attribution import storage
from attribution.features.online.state import StateUnavailable
from attribution.inference import DEFAULT_MAX_BATCH, BadRequest, InferenceCore
from serving import max_body_bytes, openapi
from serving.access import HEADER, body_limit_message, configure_logging, log_access, request_id
from serving.guard import StateWatch
from serving.metrics import WorkerMetrics
from serving.runtime import settle_garbage_collector

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _error(status: int, message: str, **extra: Any) -> Response:
    resp = jsonify({"error": message, **extra, "request_id": g.get("request_id")})
    resp.status_code = status
    return resp


def create_app(
    model_dir: str | None = None,
    state: str = "memory",
    max_batch: int = DEFAULT_MAX_BATCH,
    core: InferenceCore | None = None,
    prediction_log: str | None = None,
    state_options: dict[str, Any] | None = None,
) -> Flask:
    """`state_options`: InferenceCore's clock, skew, lateness and warm-start arguments
    (attribution.features.online.flags.state_options)."""
    core = core if core is not None else InferenceCore(model_dir, state, max_batch, **(state_options or {}))
    app = Flask("attribution")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes(core.max_batch)  # werkzeug checks it before reading
    app.json.sort_keys = False
    watch = StateWatch(core)
    watch.start_threads()
    # Under gunicorn (PROMETHEUS_MULTIPROC_DIR set) every worker writes its share of one view; alone, a registry.
    metrics = WorkerMetrics(watch, None if os.environ.get(MULTIPROC_ENV) else CollectorRegistry())
    if prediction_log:  # its own counters only outside gunicorn (a custom collector is per process)
        from attribution.monitoring.prediction_log import attach_prediction_log

        app.extensions["prediction_log"] = attach_prediction_log(core, prediction_log, metrics.registry)
    doc = openapi.document(core.max_batch)
    app.extensions["attribution_core"] = core

    def score(field: str) -> Response:
        if request.mimetype != "application/json":
            core.count_bad_request()
            return _error(415, f"Content-Type must be application/json, got {request.mimetype or 'none'!r}")
        raw = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH: 413 via the handler below
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as err:
            core.count_bad_request()
            return _error(400, f"malformed JSON: {err}".encode("utf-8", "backslashreplace").decode())
        if not isinstance(body, dict) or set(body) != {field}:
            core.count_bad_request()
            got = sorted(map(repr, body))[:5] if isinstance(body, dict) else type(body).__name__
            message = f"expected a JSON object with the single field \"{field}\": [click, ...]; got {got}"
            return _error(400, message.encode("utf-8", "backslashreplace").decode())
        try:
            batch = core.validate(body[field])  # a client's mistake is a 400 even while the state is down
        except BadRequest as err:
            return _error(400, str(err), instance=err.index, field=err.field)
        down = watch.down()
        if down is not None:
            core.count_state_error()
            return _unavailable(down)
        try:
            p = core.predict_batch(batch)
        except StateUnavailable as err:
            log.warning("refusing a request: %s", err)
            return _unavailable(f"online feature state unavailable: {err}")
        if batch.made_ids:  # the prediction log made some (clicks sent without one): the client names them in postbacks
            return jsonify({"probabilities": p.tolist(), "click_ids": batch.click_ids})
        return jsonify({"probabilities": p.tolist()})

    @app.post("/predict")
    def predict() -> Response:
        return score("clicks")

    @app.post("/talkingdata-api")
    def talkingdata_api() -> Response:
        return score("attrPredictRequest")

    @app.get("/healthz")
    def healthz() -> Response:
        # A stalled state is known without waiting on it; otherwise one ping (a refused connection is quick).
        down = watch.down()
        if down is not None:
            return _error(503, down, ready=False)
        try:
            core.ping()
        except StateUnavailable as err:
            return _error(503, str(err), ready=False)
        return jsonify({"status": "ready", "spec_hash": core.spec.hash, "state": type(core.store).__name__})

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return jsonify(doc)

    @app.get("/metrics")
    def metrics_text() -> Response:
        metrics.sync(core.counters)
        return Response(metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)

    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()
        g.request_id = request_id(request.headers.get(HEADER))

    @app.after_request
    def _observe(resp: Response) -> Response:
        seconds = time.perf_counter() - g.get("t0", time.perf_counter())
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.latency.labels(rule, str(resp.status_code)).observe(seconds)
        metrics.sync(core.counters)
        resp.headers[HEADER] = g.get("request_id", "")
        log_access(g.get("request_id", "-"), request.method, request.path, resp.status_code, seconds,
                   request.content_length or 0)
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        if err.code and 400 <= err.code < 500:
            core.count_bad_request()
        if isinstance(err, RequestEntityTooLarge):
            return _error(413, body_limit_message(app.config["MAX_CONTENT_LENGTH"], request.content_length))
        return _error(err.code or 500, f"{err.name}: {err.description}")

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        log.exception("unexpected error")
        return _error(500, f"internal error: {type(err).__name__}")

    return app


def _close_log(worker: object) -> None:
    app = getattr(worker, "wsgi", None)
    plog = getattr(app, "extensions", {}).get("prediction_log")
    if plog is not None:
        plog.close()


def _unavailable(message: str) -> Response:
    resp = _error(503, message)
    resp.headers["Retry-After"] = "1"
    return resp


def run_gunicorn(
    model_dir: str,
    port: int = 8080,
    state: str = "memory",
    workers: int = 1,
    host: str = "0.0.0.0",
    max_batch: int = DEFAULT_MAX_BATCH,
    threads: int = 1,
    prediction_log: str | None = None,
    state_options: dict[str, Any] | None = None,
) -> None:
    """Serve the app with gunicorn; each worker loads the model after the fork. Several workers must share
    the state, so they need Redis (`state="redis://..."`); in-process state is one worker (optionally threaded).
    Metrics go through prometheus_client's multiprocess mode: PROMETHEUS_MULTIPROC_DIR if set (emptied
    here), else a fresh directory."""
    from gunicorn.app.base import BaseApplication
    from prometheus_client import multiprocess, values

    if workers > 1 and state == "memory":
        raise ValueError("several gunicorn workers need a shared state: pass --state redis://HOST:PORT/DB")
    if not storage.isdir(model_dir):  # a local folder or a URI (gs://), read through attribution.storage
        raise ValueError(f"model directory {model_dir} does not exist")
    metrics_dir = os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="attribution-metrics-")
    shutil.rmtree(metrics_dir, ignore_errors=True)  # files of an earlier run would count again
    os.makedirs(metrics_dir)
    os.environ[MULTIPROC_ENV] = metrics_dir
    # The model itself is loaded only in the workers: xgboost's OpenMP runtime does not survive a fork, so
    # the master must not initialise it. A worker that cannot load the model logs why and gunicorn exits.

    def post_fork(server, worker) -> None:
        # prometheus_client picks its value class when imported, which may have been before the directory
        # was set: pick again, in the worker, before any metric exists.
        values.ValueClass = values.get_value_class()

    def child_exit(server, worker) -> None:
        multiprocess.mark_process_dead(worker.pid)  # its gauges leave the "live" aggregations

    class _Server(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"{host}:{port}",
                "workers": workers,
                "threads": threads,
                "worker_class": "gthread" if threads > 1 else "sync",
                "timeout": 120,
                "graceful_timeout": 20,
                "preload_app": False,
                "control_socket_disable": True,  # several servers on one host (tests, benches)
                "accesslog": None,  # the app logs each request with its request id (serving.access)
                "loglevel": "info",
                "post_fork": post_fork,
                "child_exit": child_exit,
            }
            for k, v in options.items():
                self.cfg.set(k, v)
            if prediction_log:  # gunicorn's SIGTERM ends the worker through sys.exit: close the log first
                self.cfg.set("worker_exit", lambda _server, worker: _close_log(worker))

        def load(self):
            configure_logging()
            try:
                app = create_app(model_dir, state, max_batch, prediction_log=prediction_log,
                                 state_options=state_options)
                settle_garbage_collector()
                return app
            except (ValueError, OSError) as err:  # ModelLoadError, an unreadable --warm-from: gunicorn stops
                log.error("cannot serve: %s", err)
                raise

    _Server().run()
