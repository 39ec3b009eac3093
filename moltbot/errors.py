"""The root of Moltbot's named errors. Each layer derives its own (engine/errors.py, the model store's,
storage's); the gateway maps them to each API's envelope in one place per API family."""

from __future__ import annotations


class MoltbotError(Exception):
    """A named error; `param` names the request field at fault, if any."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequestError(MoltbotError):
    """A request the services cannot carry out as asked (a 400); `code` is a short machine-readable name."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message, param)
        self.code = code
