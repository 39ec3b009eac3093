"""Request limits on headers and body, enforced before the request reaches the application."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moltbot.gateway.errors import APIError, error_body


async def _refuse(
    scope: Scope, send: Send, status: int, message: str, code: str | None = None, *, close: bool = True
) -> None:
    """Answer with the error envelope; `close` when the body may not have been read (413, 431)."""
    body = json.dumps(error_body(scope["path"], APIError(status, message, code=code))).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_OFF_LOOP_BYTES = 64 << 10
# A \\uD800-\\uDFFF escape: JSON allows it, but a lone one is no character and cannot reach UTF-8 text.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Content types under which curl and other clients send a JSON body by default.
_LAX_TYPES = (b"", b"application/x-www-form-urlencoded", b"text/plain")


def json_too_deep(body: bytes, limit: int) -> bool:
    """Whether the body is JSON nesting arrays/objects deeper than `limit`. Bodies with too few brackets
    to nest that deep are passed at C speed; others are parsed (a nesting past the interpreter's
    recursion limit is too deep by definition) and walked without recursion."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    try:
        value = json.loads(body)
    except RecursionError:
        return True
    except ValueError:
        return False  # not JSON: the route's parser answers 400
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _lone_surrogate(value: Any) -> bool:
    """Whether any string (key or value) in parsed JSON holds a lone UTF-16 surrogate; no recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def body_problem(body: bytes, max_depth: int) -> str | None:
    """Why a JSON request body cannot be used (not UTF-8, nested too deep, a lone surrogate), or None.
    Bodies that are not JSON at all are left to the route's parser."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not valid UTF-8"
    if json_too_deep(body, max_depth):
        return f"JSON nests deeper than {max_depth} levels"
    if _SURROGATE_ESCAPE.search(body) is None:
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if _lone_surrogate(value):
        return "the body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff not in a pair): it is not text"
    return None


def _content_type(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value.split(b";")[0].strip().lower())
    return b""


def _as_json(scope: Scope) -> Scope:
    """The scope with its content type set to JSON (for a JSON body sent with curl's default type)."""
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def _has_credentials(scope: Scope) -> bool:
    return any(name in (b"authorization", b"x-api-key") for name, _ in scope["headers"])


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RequestLimitsMiddleware:
    """Answers 431 past the header limits, 413 past `max_body_bytes`, 400 for JSON nested past
    `max_json_depth`; replays the body to the app."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_header_bytes: int,
        *,
        max_headers: int = 100,
        max_json_depth: int = 64,
        uploads: dict[str, int] | None = None,
    ) -> None:
        self._app = app
        self._max = max_body_bytes
        self._uploads = uploads or {}  # POST paths with their own body limit (file uploads)
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = scope["headers"]
        if len(headers) > self._max_headers or sum(len(k) + len(v) for k, v in headers) > self._max_header_bytes:
            await _refuse(scope, send, 431, "request headers are too large or too many")
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self._app(scope, receive, send)
            return
        limit = self._max
        if scope["method"] == "POST" and scope["path"] in self._uploads and _has_credentials(scope):
            limit = self._uploads[scope["path"]]  # only a request that names a key may send a large body
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _refuse(scope, send, 413, f"request body exceeds the limit of {limit} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(scope, send, 413, f"request body exceeds the limit of {limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        kind = _content_type(scope)
        if kind in _LAX_TYPES and body.lstrip()[:1] in (b"{", b"["):
            scope, kind = _as_json(scope), b"application/json"  # JSON sent as curl's default form type
        if kind == b"application/json" or kind.endswith(b"+json"):
            if len(body) > _OFF_LOOP_BYTES:  # a big body's check must not hold up the other requests
                problem = await asyncio.to_thread(body_problem, body, self._max_json_depth)
            else:
                problem = body_problem(body, self._max_json_depth)
            if problem is not None:
                await _refuse(scope, send, 400, problem, "invalid_body", close=False)
                return
        await self._app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
