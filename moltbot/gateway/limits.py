"""Request limits on headers and body, enforced before the request reaches the application."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moltbot.gateway.errors import envelope


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps(envelope(message, "invalid_request_error")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RequestLimitsMiddleware:
    """Answers 431 past the header limits and 413 past `max_body_bytes`; replays the body to the app."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_header_bytes: int, max_headers: int = 100) -> None:
        self._app = app
        self._max = max_body_bytes
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = scope["headers"]
        if len(headers) > self._max_headers or sum(len(k) + len(v) for k, v in headers) > self._max_header_bytes:
            await _refuse(send, 431, "request headers are too large or too many")
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self._app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self._max:
            await _refuse(send, 413, f"request body exceeds the limit of {self._max} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max:
                await _refuse(send, 413, f"request body exceeds the limit of {self._max} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self._app(scope, _replay(b"".join(chunks), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
