"""The Flask app's OpenAPI 3 document, built from the schema's field limits so it cannot drift from them."""

from __future__ import annotations

from typing import Any

from attribution.inference import DEFAULT_MAX_BATCH
from attribution.schema import ID_FIELDS, ID_LIMITS, TIME_FORMAT


def click_schema() -> dict[str, Any]:
    props: dict[str, Any] = {
        f: {
            "oneOf": [
                {"type": "integer", "minimum": 0, "maximum": limit},
                {"type": "string", "pattern": r"^\s*\d{1,19}\s*$", "description": "decimal digits"},
            ]
        }
        for f, limit in ID_LIMITS.items()
    }
    props["click_time"] = {
        "oneOf": [
            {"type": "string", "example": "2017-11-09 04:00:00", "description": f"UTC, {TIME_FORMAT}"},
            {"type": "integer", "minimum": 0, "description": "epoch seconds (UTC)"},
        ],
        "description": "when the click happened; at most a day ahead of the server's clock",
    }
    props["click_id"] = {
        "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^\s*\d{1,19}\s*$"}],
        "description": "optional; a retried request with the same click_id is not recorded twice",
    }
    return {
        "type": "object",
        "required": list(ID_FIELDS) + ["click_time"],
        "properties": props,
        "additionalProperties": False,
        "example": {"ip": 5348, "app": 19, "device": 1, "os": 13, "channel": 213,
                    "click_time": "2017-11-09 04:00:00", "click_id": 17},
    }


def document(max_batch: int = DEFAULT_MAX_BATCH, title: str = "attribution") -> dict[str, Any]:
    clicks = {"type": "array", "minItems": 1, "maxItems": max_batch, "items": {"$ref": "#/components/schemas/Click"}}
    error = {"description": "", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

    def answer(desc: str) -> dict[str, Any]:
        return {**error, "description": desc}

    def scoring(summary: str, field: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {
                        "type": "object", "required": [field], "additionalProperties": False,
                        "properties": {field: clicks},
                    }}},
                },
                "responses": {
                    "200": {"description": "one probability per click, in request order",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Probabilities"}}}},
                    "400": answer("malformed JSON, a missing, extra or invalid field, an empty or oversized batch; "
                                  "the message names the instance and the field"),
                    "413": answer("request body too large"),
                    "415": answer("Content-Type is not application/json"),
                    "503": answer("the online feature state (Redis) is unreachable; retry later"),
                },
            }
        }

    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": "1",
            "description": "P(attributed): the probability, at click time, that a mobile-ad click leads to an app "
                           "download. Each click is recorded in the online feature state, then scored.",
        },
        "paths": {
            "/predict": scoring("Score clicks", "clicks"),
            "/talkingdata-api": scoring("Score clicks (the original service's route and request field)", "attrPredictRequest"),
            "/healthz": {"get": {"summary": "Ready to score (model loaded, state reachable)", "responses": {
                "200": {"description": "ready"}, "503": answer("state unavailable")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3"}}}},
        },
        "components": {
            "schemas": {
                "Click": click_schema(),
                "Probabilities": {"type": "object", "required": ["probabilities"], "properties": {
                    "probabilities": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}}}},
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"}, "instance": {"type": "integer", "nullable": True},
                    "field": {"type": "string", "nullable": True}}},
            }
        },
    }
