"""Named engine errors; the gateway maps them to HTTP in one place."""

from __future__ import annotations

from moltbot.errors import MoltbotError


class EngineError(MoltbotError):
    """Base of every engine error. `param` names the request field at fault, if any."""


class ModelLoadError(EngineError):
    """A model file could not be loaded (malformed, truncated, unsupported)."""


class UnsupportedOperationError(EngineError):
    """The model cannot do what was asked (chat on an embedding model, say)."""


class ContextLengthError(EngineError):
    """The prompt, or prompt plus max_tokens, does not fit the context."""


class InvalidGrammarError(EngineError):
    """A response_format schema could not be turned into a grammar."""


class EngineBusyError(EngineError):
    """The admission queue is full, or a request waited too long for a slot."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelNotReadyError(EngineBusyError):
    """The model is still loading."""


class RequestTimeoutError(EngineError):
    """Generation ran past the request time limit."""


class RequestCancelledError(EngineError):
    """The request was cancelled (its client went away) before it was done."""
