"""The OpenAPI document as the server really answers: errors are each API family's envelope (OpenAI's,
Ollama's, Anthropic's) with 400 (never FastAPI's 422), and every operation needs a key but the open
health checks."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from moltbot.gateway.auth import PUBLIC_PATHS
from moltbot.gateway.errors import is_anthropic, is_ollama

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
OLLAMA_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
ANTHROPIC_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}
ERRORS = {
    "400": "Invalid request",
    "401": "Missing or invalid API key",
    "403": "The key lacks this route's scope",
    "404": "Not found",
    "413": "Body too large",
    "429": "Rate limit reached (Retry-After)",
    "503": "Overloaded or loading (Retry-After)",
}


def install_openapi(app: FastAPI) -> None:
    def document() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        schemas["ErrorResponse"] = ERROR_SCHEMA
        schemas["OllamaErrorResponse"] = OLLAMA_ERROR_SCHEMA
        schemas["AnthropicErrorResponse"] = ANTHROPIC_ERROR_SCHEMA
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in schema.get("paths", {}).items():
            name = (
                "OllamaErrorResponse"
                if is_ollama(path)
                else "AnthropicErrorResponse"
                if is_anthropic(path)
                else "ErrorResponse"
            )
            error = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                for code, description in ERRORS.items():
                    responses.setdefault(code, {"description": description, **error})
                if path not in PUBLIC_PATHS:
                    operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = document  # type: ignore[method-assign]
