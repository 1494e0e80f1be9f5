"""KServe's FastAPI app, wrapped once: a body-size cap checked before anything parses the body, the framing of
V2 binary-extension bodies checked before kserve slices them (serving.v2_binary), a request id and an access
log line for every request, the id in every error body, and 503s with Retry-After. kserve's own timing
middleware is left out of the stack (see `_without_kserve_timing`).

KServe registers its routes and exception handlers when the server starts; `install` runs before that and
touches only what KServe leaves open (middleware, a handler for our own exception class)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from serving import v2_binary
from serving.access import HEADER, body_limit_message, log_access, request_id
from serving.guard import Unavailable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RequestGuard:
    """Pure ASGI middleware (no per-request task or body copy beyond the one read)."""

    def __init__(self, app: Callable, max_body: int, max_batch: int, on_first_request: Callable[[], None] | None = None,
                 on_bad_request: Callable[[], None] = lambda: None) -> None:
        self.app, self.max_body, self.max_batch = app, max_body, max_batch
        self.on_first_request, self.on_bad_request = on_first_request, on_bad_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.on_first_request is not None:
            start, self.on_first_request = self.on_first_request, None
            start()
        t0 = time.perf_counter()
        headers = dict(scope["headers"])
        rid = request_id(headers.get(HEADER.lower().encode(), b"").decode("latin-1"))
        scope.setdefault("state", {})["request_id"] = rid
        status, size = 500, 0
        try:
            length = headers.get(b"content-length")
            declared = int(length) if length and length.isdigit() else None
            if declared is not None and declared > self.max_body:
                status = 413
                self.on_bad_request()
                return await _json(send, 413, {"error": body_limit_message(self.max_body, declared)}, rid)
            body, over = await _read(receive, self.max_body)
            size = len(body)
            if over:
                status = 413
                self.on_bad_request()
                return await _json(send, 413, {"error": body_limit_message(self.max_body)}, rid)
            if v2_binary.applies(scope["method"], scope["path"], headers):
                wrong = v2_binary.problem(headers, body, self.max_batch)
                if wrong is not None:
                    status = 400
                    self.on_bad_request()
                    return await _json(send, 400, {"error": wrong}, rid)
            status = await self._forward(scope, body, send, rid)
        finally:
            log_access(rid, scope["method"], scope["path"], status, time.perf_counter() - t0, size)

    async def _forward(self, scope: Scope, body: bytes, send: Send, rid: str) -> int:
        sent = False
        status = 500
        error: dict[str, Any] = {}

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (HEADER.lower().encode(), rid.encode())]
                if status >= 400:  # hold the (small) error body to add the request id
                    error["start"] = message
                    error["body"] = b""
                    return
            elif message["type"] == "http.response.body" and "start" in error:
                error["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                return await _rewrite(send, error["start"], error["body"], rid)
            await send(message)

        try:
            await self.app(scope, replay, send_with_id)
        except Exception as err:  # what no handler took: a 500 that still carries the request id
            logging.getLogger("serving").exception("unexpected error (request %s)", rid)
            if status == 500 and "start" not in error:
                await _json(send, 500, {"error": f"internal error: {type(err).__name__}"}, rid)
            return 500
        return status


async def _read(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The body, or (what was read, True) as soon as it passes `limit` (a chunked body without a length)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks), False


async def _json(send: Send, status: int, content: dict, rid: str) -> None:
    body = orjson.dumps({**content, "request_id": rid})
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (HEADER.lower().encode(), rid.encode())]})
    await send({"type": "http.response.body", "body": body})


async def _rewrite(send: Send, start: Message, body: bytes, rid: str) -> None:
    try:
        content = orjson.loads(body)
    except orjson.JSONDecodeError:
        content = None
    if isinstance(content, dict):
        content["request_id"] = rid
        body = orjson.dumps(content)
    else:
        body = orjson.dumps({"error": body.decode("utf-8", "replace"), "request_id": rid})
    headers = [(k, v) for k, v in start["headers"] if k.lower() not in (b"content-length", b"content-type")]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
    return JSONResponse(status_code=503, content={"error": str(exc)}, headers={"Retry-After": str(exc.retry_after)})


def install(app: FastAPI, max_body: int, max_batch: int, on_first_request: Callable[[], None] | None = None,
            on_bad_request: Callable[[], None] = lambda: None) -> None:
    app.add_middleware(RequestGuard, max_body=max_body, max_batch=max_batch, on_first_request=on_first_request,
                       on_bad_request=on_bad_request)
    app.add_exception_handler(Unavailable, _unavailable)
    logging.getLogger("uvicorn.access").disabled = True  # our line carries the request id; no second line
    _without_kserve_timing(app)


def _without_kserve_timing(app: FastAPI) -> None:
    """kserve (0.21) adds timing_asgi's TimingMiddleware when the server starts, whatever
    --enable_latency_logging says: for every request it matches the path against every route again to name
    a metric and formats two trace-log lines of wall and CPU time (~0.3 ms of CPU per single-click request,
    bench/serve.py). Our access line already gives each request's time, with its id, and kserve's latency
    histograms (Model.__call__) stay. The stack is built on the server's first ASGI call, after kserve has
    added its middleware: drop it there."""
    from timing_asgi import TimingMiddleware

    build = app.build_middleware_stack

    def build_without_timing() -> Callable:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]
        return build()

    app.build_middleware_stack = build_without_timing  # type: ignore[method-assign]
