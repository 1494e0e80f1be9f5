"""Request ids and the access log, one format for both servers.

A request's id is its `X-Request-ID` header when that is a plain token (what Istio/Envoy and most clients
send), else a new one; it comes back in the `X-Request-ID` response header and in every error body, and
starts the request's access log line:

    request_id=<id> method=POST path=/v1/models/attribution:predict status=200 ms=1.42 bytes=183
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets

HEADER = "X-Request-ID"
_TOKEN = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")  # nothing that could forge or break a log line
log = logging.getLogger("serving.access")
# A made id: this process's random half and a counter (32 hex digits, unique across pods and restarts like a
# uuid4, without reading the OS's random source on every request).
_PROCESS = secrets.token_hex(8)
_COUNT = itertools.count()


def _reseed() -> None:  # a forked worker (gunicorn) gets its own half
    global _PROCESS, _COUNT
    _PROCESS, _COUNT = secrets.token_hex(8), itertools.count()


os.register_at_fork(after_in_child=_reseed)


def request_id(header: str | None) -> str:
    if header and _TOKEN.fullmatch(header):
        return header
    return f"{_PROCESS}{next(_COUNT) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def log_access(rid: str, method: str, path: str, status: int, seconds: float, body_bytes: int) -> None:
    log.info("request_id=%s method=%s path=%s status=%d ms=%.2f bytes=%d", rid, method, path, status,
             seconds * 1e3, body_bytes)


def body_limit_message(limit: int, got: int | None = None) -> str:
    size = f" of {got} bytes" if got is not None else ""
    return f"request body{size} exceeds the limit of {limit} bytes"


def configure_logging() -> None:
    """The `serving` loggers (access lines, refusals) to stderr at INFO, whoever configured the rest."""
    root = logging.getLogger("serving")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
