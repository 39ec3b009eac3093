"""The OpenAI error envelope, and the one place where every error becomes an HTTP response."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from moltbot.engine.errors import (
    ContextLengthError,
    EngineBusyError,
    InvalidGrammarError,
    ModelLoadError,
    RequestCancelledError,
    RequestTimeoutError,
    UnsupportedOperationError,
)
from moltbot.engine.template import TemplateRenderError
from moltbot.errors import InvalidRequestError, MoltbotError
from moltbot.gateway.disconnect import ClientDisconnectedError
from moltbot.models.manager import DeployConflictError, DeployError, InsufficientMemoryError, ModelNotFoundError
from moltbot.models.package import PackageKeyError
from moltbot.models.registry import RegistryError
from moltbot.models.store import StoreError, UnknownModelError
from moltbot.services.documents import DocumentNotFoundError
from moltbot.services.graph import NodeNotFoundError
from moltbot.services.responses import ResponseNotFoundError
from moltbot.services.sessions import SessionNotFoundError
from moltbot.storage.errors import StorageBusyError, StorageError, StorageFullError

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error the gateway answers with the OpenAI envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - the envelope's field name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}


def envelope(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:  # noqa: A002
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# Each API family answers errors in its own shape, chosen by the path (OpenAI's is the default).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def is_ollama(path: str) -> bool:
    return path.startswith("/api/") or path == "/"


def is_anthropic(path: str) -> bool:
    return path in ("/v1/messages", "/v1/messages/count_tokens")


def error_body(path: str, error: APIError) -> dict[str, Any]:
    """The error in the shape of the API family `path` belongs to: Ollama's {"error": message},
    Anthropic's {"type": "error", "error": {"type", "message"}}, else OpenAI's envelope."""
    if is_ollama(path):
        return {"error": error.message}
    if is_anthropic(path):
        kind = _ANTHROPIC_TYPES.get(error.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": error.message}}
    return envelope(error.message, error.type, error.param, error.code)


def error_response(error: APIError, path: str = "") -> JSONResponse:
    return JSONResponse(error_body(path, error), status_code=error.status, headers=error.headers)


def from_error(exc: MoltbotError) -> APIError:
    """Map a named error to its HTTP status and envelope."""
    if isinstance(exc, InvalidRequestError):
        return APIError(400, exc.message, param=exc.param, code=exc.code)
    if isinstance(exc, ResponseNotFoundError):
        return APIError(404, exc.message, param=exc.param, code="response_not_found")
    if isinstance(exc, NodeNotFoundError):
        return APIError(404, exc.message, param=exc.param, code="node_not_found")
    if isinstance(exc, DocumentNotFoundError):
        return APIError(404, exc.message, param=exc.param, code="document_not_found")
    if isinstance(exc, SessionNotFoundError):
        return APIError(404, exc.message, param=exc.param, code="session_not_found")
    if isinstance(exc, TemplateRenderError):
        return APIError(400, exc.message, param=exc.param, code="template_error")
    if isinstance(exc, (ModelNotFoundError, UnknownModelError)):
        return APIError(404, exc.message, param=exc.param, code="model_not_found")
    if isinstance(exc, DeployConflictError):
        return APIError(409, exc.message, code="conflict")
    if isinstance(exc, InsufficientMemoryError):
        return APIError(409, exc.message, code="insufficient_memory")
    if isinstance(exc, DeployError):
        return APIError(422, exc.message, code="deploy_failed")
    if isinstance(exc, RegistryError):
        return APIError(502, exc.message, type="server_error", code="registry_error")
    if isinstance(exc, PackageKeyError):
        return APIError(422, exc.message, code="package_key")
    if isinstance(exc, StoreError):
        return APIError(400, exc.message, code="model_store")
    if isinstance(exc, EngineBusyError):
        headers = {"Retry-After": str(exc.retry_after_s)}
        return APIError(503, exc.message, type="server_overloaded", code="engine_busy", headers=headers)
    if isinstance(exc, ContextLengthError):
        return APIError(400, exc.message, param=exc.param, code="context_length_exceeded")
    if isinstance(exc, (UnsupportedOperationError, InvalidGrammarError)):
        return APIError(400, exc.message, param=exc.param, code="unsupported")
    if isinstance(exc, RequestTimeoutError):
        return APIError(504, exc.message, type="timeout_error", code="request_timeout")
    if isinstance(exc, RequestCancelledError):
        return APIError(499, exc.message, code="client_closed_request")
    if isinstance(exc, StorageFullError):
        log.error("a write failed: %s", exc)
        message = "the server's storage is full; nothing was written"
        return APIError(507, message, type="server_error", code="insufficient_storage")
    if isinstance(exc, StorageBusyError):
        headers = {"Retry-After": "1"}
        return APIError(
            503, "the database is busy; retry", type="server_overloaded", code="storage_busy", headers=headers
        )
    if isinstance(exc, ModelLoadError):
        return APIError(500, "the model failed to load", type="server_error")
    log.error("request failed: %s: %s", type(exc).__name__, exc.message)
    if isinstance(exc, StorageError):
        return APIError(500, "internal error in storage", type="server_error")
    return APIError(500, "internal error in the engine", type="server_error")


def stream_error(exc: Exception) -> APIError:
    """An error met mid-stream (the status is already on the wire), as the error its last event tells;
    anything unnamed is logged and told as an internal error."""
    if isinstance(exc, MoltbotError):
        return from_error(exc)
    if isinstance(exc, APIError):
        return exc
    log.error("stream failed", exc_info=exc)
    return APIError(500, "internal server error", type="server_error")


_STATUS_TEXT = {
    401: ("authentication_error", "invalid or missing API key"),
    403: ("permission_error", "this API key lacks the scope for this route"),
    404: ("invalid_request_error", "no such route"),
    405: ("invalid_request_error", "method not allowed on this route"),
    413: ("invalid_request_error", "request body too large"),
}


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _validation_param(loc: tuple[Any, ...]) -> str | None:
    """The field's path; pydantic's union-member tags (`literal[...]`, `list[int]`, `str`) left out."""
    parts = [
        str(p)
        for p in loc
        if p != "body" and (isinstance(p, int) or (p not in _TYPE_TAGS and not any(c in str(p) for c in "[]'(),-")))
    ]
    return ".".join(parts) or None


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)  # noqa: S101 - registered for this type only
    return error_response(exc, request.url.path)


async def _on_engine_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MoltbotError)  # noqa: S101 - registered for this type only
    return error_response(from_error(exc), request.url.path)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for this type only
    kind, message = _STATUS_TEXT.get(exc.status_code, ("invalid_request_error", "request failed"))
    error = APIError(exc.status_code, message, type=kind, headers=dict(exc.headers or {}))
    return error_response(error, request.url.path)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type only
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return error_response(
            APIError(400, "the request body is not valid JSON", code="invalid_json"), request.url.path
        )
    param = _validation_param(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid request"))
    text = f"invalid value for '{param}': {message}" if param else message
    return error_response(APIError(400, text, param=param, code="invalid_value"), request.url.path)


async def _on_client_gone(request: Request, exc: Exception) -> JSONResponse:
    """Nobody reads this reply: 499 (nginx's "client closed request") is what the access log records."""
    error = APIError(499, "the client closed the connection", code="client_closed_request")
    return error_response(error, request.url.path)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(APIError(500, "internal server error", type="server_error"), request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _on_api_error)
    app.add_exception_handler(MoltbotError, _on_engine_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ClientDisconnectedError, _on_client_gone)
    app.add_exception_handler(Exception, _on_unexpected)
