"""Serving adapters over attribution.inference.InferenceCore: a KServe custom predictor (V1 + V2 / Open
Inference Protocol, `python -m serving`) and a Flask app under gunicorn (`serving.flask_app`). They hold no
feature or model logic: they translate HTTP to the core and the core's errors to status codes
(BadRequest -> 400, StateUnavailable -> 503)."""

DEFAULT_MODEL_NAME = "attribution"
BYTES_PER_CLICK = 1024  # a generous JSON click; bodies beyond max_batch clicks of this are refused (413)


def max_body_bytes(max_batch: int) -> int:
    """The largest request body either server reads, checked before any parsing."""
    return max_batch * BYTES_PER_CLICK + 65_536
