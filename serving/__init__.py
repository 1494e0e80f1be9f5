"""Serving adapters over attribution.inference.InferenceCore: a KServe custom predictor (V1 + V2 / Open
Inference Protocol, `python -m serving`) and a Flask app under gunicorn (`serving.flask_app`). They hold no
feature or model logic: they translate HTTP to the core and the core's errors to status codes
(BadRequest -> 400, StateUnavailable -> 503)."""

DEFAULT_MODEL_NAME = "attribution"
