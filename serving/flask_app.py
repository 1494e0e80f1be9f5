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
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.exceptions import HTTPException

from attribution import storage
from attribution.features.online.state import StateUnavailable
from attribution.inference import DEFAULT_MAX_BATCH, BadRequest, InferenceCore
from serving import openapi
from serving.metrics import register_core, request_histogram
from serving.runtime import settle_garbage_collector

log = logging.getLogger(__name__)
BYTES_PER_CLICK = 1024  # a generous JSON click; bodies beyond max_batch clicks of this are refused (413)


def _error(status: int, message: str, **extra: Any) -> Response:
    resp = jsonify({"error": message, **extra})
    resp.status_code = status
    return resp


def create_app(
    model_dir: str | None = None,
    state: str = "memory",
    max_batch: int = DEFAULT_MAX_BATCH,
    core: InferenceCore | None = None,
    prediction_log: str | None = None,
) -> Flask:
    core = core if core is not None else InferenceCore(model_dir, state, max_batch)
    app = Flask("attribution")
    app.config["MAX_CONTENT_LENGTH"] = core.max_batch * BYTES_PER_CLICK + 65_536
    app.json.sort_keys = False
    registry = CollectorRegistry()
    register_core(core, registry)
    if prediction_log:
        from attribution.monitoring.prediction_log import attach_prediction_log

        app.extensions["prediction_log"] = attach_prediction_log(core, prediction_log, registry)
    latency = request_histogram(registry)
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
            return _error(400, f"malformed JSON: {err}")
        if not isinstance(body, dict) or set(body) != {field}:
            core.count_bad_request()
            got = sorted(body)[:5] if isinstance(body, dict) else type(body).__name__
            return _error(400, f"expected a JSON object with the single field \"{field}\": [click, ...]; got {got}")
        try:
            p, click_ids = core.score(body[field])
        except BadRequest as err:
            return _error(400, str(err), instance=err.index, field=err.field)
        except StateUnavailable as err:
            log.warning("refusing a request: %s", err)
            return _error(503, f"online feature state unavailable: {err}")
        if click_ids:  # the prediction log made some (clicks sent without one): the client names them in postbacks
            return jsonify({"probabilities": p.tolist(), "click_ids": click_ids})
        return jsonify({"probabilities": p.tolist()})

    @app.post("/predict")
    def predict() -> Response:
        return score("clicks")

    @app.post("/talkingdata-api")
    def talkingdata_api() -> Response:
        return score("attrPredictRequest")

    @app.get("/healthz")
    def healthz() -> Response:
        try:
            core.ping()
        except StateUnavailable as err:
            return _error(503, str(err), ready=False)
        return jsonify({"status": "ready", "spec_hash": core.spec.hash, "state": type(core.store).__name__})

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return jsonify(doc)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()

    @app.after_request
    def _observe(resp: Response) -> Response:
        t0 = g.get("t0")
        if t0 is not None:
            rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
            latency.labels(rule, str(resp.status_code)).observe(time.perf_counter() - t0)
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        if err.code and 400 <= err.code < 500:
            core.count_bad_request()
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


def run_gunicorn(
    model_dir: str,
    port: int = 8080,
    state: str = "memory",
    workers: int = 1,
    host: str = "0.0.0.0",
    max_batch: int = DEFAULT_MAX_BATCH,
    threads: int = 1,
    prediction_log: str | None = None,
) -> None:
    """Serve the app with gunicorn; each worker loads the model after the fork. Several workers must share
    the state, so they need Redis (`state="redis://..."`); in-process state is one worker (optionally threaded)."""
    from gunicorn.app.base import BaseApplication

    if workers > 1 and state == "memory":
        raise ValueError("several gunicorn workers need a shared state: pass --state redis://HOST:PORT/DB")
    if not storage.isdir(model_dir):  # a local folder or a URI (gs://), read through attribution.storage
        raise ValueError(f"model directory {model_dir} does not exist")
    # The model itself is loaded only in the workers: xgboost's OpenMP runtime does not survive a fork, so
    # the master must not initialise it. A worker that cannot load the model logs why and gunicorn exits.

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
                "accesslog": None,
                "loglevel": "info",
            }
            for k, v in options.items():
                self.cfg.set(k, v)
            if prediction_log:  # gunicorn's SIGTERM ends the worker through sys.exit: close the log first
                self.cfg.set("worker_exit", lambda _server, worker: _close_log(worker))

        def load(self):
            try:
                app = create_app(model_dir, state, max_batch, prediction_log=prediction_log)
                settle_garbage_collector()
                return app
            except ValueError as err:  # ModelLoadError: log the reason; gunicorn stops on a failed boot
                log.error("cannot serve: %s", err)
                raise

    _Server().run()
