from __future__ import annotations

import pytest

from moltbot.engine.errors import (
    ContextLengthError,
    EngineBusyError,
    EngineError,
    InvalidGrammarError,
    ModelLoadError,
    ModelNotReadyError,
    RequestTimeoutError,
    UnsupportedOperationError,
)
from moltbot.gateway.errors import from_error
from moltbot.models.manager import ModelNotFoundError


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (ModelNotFoundError("x", param="model"), 404, "model_not_found"),
        (EngineBusyError("x", retry_after_s=3), 503, "engine_busy"),
        (ModelNotReadyError("x", retry_after_s=5), 503, "engine_busy"),
        (ContextLengthError("x", param="messages"), 400, "context_length_exceeded"),
        (UnsupportedOperationError("x"), 400, "unsupported"),
        (InvalidGrammarError("x"), 400, "unsupported"),
        (RequestTimeoutError("x"), 504, "request_timeout"),
        (ModelLoadError("/secret/path.gguf broke"), 500, None),
        (EngineError("internal detail"), 500, None),
    ],
)
def test_engine_errors_map_to_statuses(error: EngineError, status: int, code: str | None) -> None:
    api = from_error(error)
    assert (api.status, api.code) == (status, code)
    if status == 500:
        assert "secret" not in api.message and "detail" not in api.message


def test_busy_carries_retry_after() -> None:
    assert from_error(EngineBusyError("x", retry_after_s=3)).headers == {"Retry-After": "3"}
