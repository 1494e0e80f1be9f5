"""kserve 0.21 answers with FastAPI's `ORJSONResponse`, which FastAPI 0.165 deprecates (a warning per
server). The same rendering in a response class of our own, installed where kserve picks its class."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson, numpy values included, as kserve's V1/V2 answers expect."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def install() -> None:
    """Make kserve's app and its V1 endpoints answer with OrjsonResponse (before the server adds routes)."""
    from kserve import model_server
    from kserve.protocol.rest import v1_endpoints

    model_server.app.router.default_response_class = OrjsonResponse
    v1_endpoints.ORJSONResponse = OrjsonResponse
