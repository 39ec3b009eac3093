"""Deny by default: every route needs a valid key and its declared scope, but an explicit allow-list.

The scope of each route is declared in ROUTE_SCOPES, in one place. A route that matches but has
no declaration is refused (403), so a new route cannot be left open by mistake.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Final

from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moltbot.gateway.errors import APIError, error_body
from moltbot.gateway.ratelimit import RateLimiter
from moltbot.storage.keys import KeyStore
from moltbot.storage.keys import Scope as KeyScope

# "/": Ollama's liveness probe (HEAD) and a redirect to the chat page; /ui*: the page's static files.
PUBLIC_PATHS: Final = frozenset(
    {
        "/healthz",
        "/readyz",
        "/",
        "/ui",
        "/ui/app.js",
        "/ui/app.css",
        "/ui/mic.js",
        "/ui/graph",
        "/ui/graph.js",
        "/ui/vendor/cytoscape.min.js",
        "/favicon.ico",
    }
)
ANY_SCOPE: Final = None
API_KEY_STATE: Final = "api_key"
ROUTE_STATE: Final = "route"
CLIENT_STATE: Final = "client"  # the client's address (set by the observe middleware)
CHARGE_STATE: Final = "charge_tokens"  # routes call it with the tokens a reply used

ROUTE_SCOPES: Final[dict[str, KeyScope | None]] = {
    "/openapi.json": ANY_SCOPE,
    "/v1/models": KeyScope.MODELS_READ,
    "/v1/models/{model_id}": KeyScope.MODELS_READ,
    "/v1/chat/completions": KeyScope.CHAT,
    "/v1/completions": KeyScope.CHAT,
    "/v1/embeddings": KeyScope.EMBEDDINGS,
    "/metrics": KeyScope.METRICS,
    "/v1/admin/alerts": KeyScope.ADMIN,
    "/v1/admin/keys": KeyScope.ADMIN,
    "/v1/admin/keys/{key_id}": KeyScope.ADMIN,
    "/v1/admin/audit": KeyScope.ADMIN,
    "/v1/admin/models": KeyScope.ADMIN,
    "/v1/admin/models/{name}/versions": KeyScope.ADMIN,
    "/v1/admin/models/{name}/deploy": KeyScope.ADMIN,
    "/v1/admin/models/{name}/rollback": KeyScope.ADMIN,
    "/v1/sessions": KeyScope.SESSIONS,
    "/v1/sessions/import": KeyScope.SESSIONS,
    "/v1/sessions/{session_id}": KeyScope.SESSIONS,
    "/v1/sessions/{session_id}/export": KeyScope.SESSIONS,
    "/v1/sessions/{session_id}/messages": KeyScope.SESSIONS,
    # OpenAI's Responses API
    "/v1/responses": KeyScope.CHAT,
    "/v1/responses/{response_id}": KeyScope.CHAT,
    "/v1/responses/{response_id}/input_items": KeyScope.CHAT,
    # Ollama's API
    "/api/chat": KeyScope.CHAT,
    "/api/generate": KeyScope.CHAT,
    "/api/embed": KeyScope.EMBEDDINGS,
    "/api/embeddings": KeyScope.EMBEDDINGS,
    "/api/tags": KeyScope.MODELS_READ,
    "/api/ps": KeyScope.MODELS_READ,
    "/api/show": KeyScope.MODELS_READ,
    "/api/version": ANY_SCOPE,
    "/api/pull": KeyScope.MODELS_WRITE,
    "/api/delete": KeyScope.MODELS_WRITE,
    # Anthropic's Messages API
    "/v1/messages": KeyScope.CHAT,
    "/v1/messages/count_tokens": KeyScope.CHAT,
    # Preprocessing pipelines
    "/v1/pipelines": KeyScope.DOCUMENTS,
    "/v1/pipelines/steps": KeyScope.DOCUMENTS,
    "/v1/pipelines/validate": KeyScope.DOCUMENTS,
    "/v1/pipelines/run": KeyScope.DOCUMENTS,
    # Documents
    "/v1/documents": KeyScope.DOCUMENTS,
    "/v1/documents/ask": KeyScope.DOCUMENTS,
    "/v1/documents/{document_id}": KeyScope.DOCUMENTS,
    "/v1/documents/{document_id}/events": KeyScope.DOCUMENTS,
    "/v1/documents/{document_id}/pages": KeyScope.DOCUMENTS,
    "/v1/documents/{document_id}/chunks": KeyScope.DOCUMENTS,
    "/v1/documents/{document_id}/summary": KeyScope.DOCUMENTS,
    # OpenAI's audio API
    "/v1/audio/transcriptions": KeyScope.AUDIO,
    "/v1/audio/translations": KeyScope.AUDIO,
    "/v1/audio/speech": KeyScope.AUDIO,
    "/v1/audio/voices": KeyScope.AUDIO,
    # The knowledge graph
    "/v1/graph/nodes": KeyScope.DOCUMENTS,
    "/v1/graph/nodes/{node_id}": KeyScope.DOCUMENTS,
    "/v1/graph/path": KeyScope.DOCUMENTS,
    "/v1/graph/subgraph": KeyScope.DOCUMENTS,
    "/v1/graph/export": KeyScope.DOCUMENTS,
}


def request_owner(request: Request) -> str:
    """The id of the key a request was authenticated with: the owner of what it stores."""
    return str(request.scope["state"][API_KEY_STATE].id)


def _bearer(scope: Scope) -> str | None:
    """The key: `Authorization: Bearer <key>`, or Anthropic's `x-api-key: <key>` header."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if kind.lower() == "bearer" and token.strip() else None
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            return value.decode("latin-1").strip() or None
    return None


async def _deny(
    scope: Scope,
    send: Send,
    status: int,
    message: str,
    kind: str,
    *,
    code: str | None = None,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    body = json.dumps(error_body(scope["path"], APIError(status, message, type=kind, code=code))).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _retry_after(seconds: float) -> tuple[bytes, bytes]:
    return (b"retry-after", str(max(1, math.ceil(seconds))).encode())


class AuthMiddleware:
    """Checks the bearer key, then the scope declared for the matched route, then the key's rate limits.
    A client whose keys keep failing is refused for a while before its key is even read."""

    def __init__(self, app: ASGIApp, keys: KeyStore, routes: list[Route], limiter: RateLimiter | None = None) -> None:
        self._app = app
        self._keys = keys
        self._routes = routes
        self._limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self._app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        client = state.get(CLIENT_STATE) or ""
        limiter = self._limiter
        if limiter is not None and (wait := limiter.auth_blocked(client)) > 0:
            message = "too many requests with invalid API keys from this address"
            await _deny(
                scope, send, 429, message, "rate_limit_error", code="rate_limit_exceeded", extra=[_retry_after(wait)]
            )
            return
        token = _bearer(scope)
        key = self._keys.authenticate(token) if token else None
        if key is None:
            if limiter is not None:
                limiter.auth_failed(client)
            await _deny(scope, send, 401, "invalid or missing API key", "authentication_error")
            return
        template = route_template(self._routes, scope)
        state[ROUTE_STATE] = template
        if template is not None:
            if template not in ROUTE_SCOPES:
                await _deny(scope, send, 403, "this route has no declared scope and is refused", "permission_error")
                return
            needed = ROUTE_SCOPES[template]
            if needed is not None and not key.allows(needed):
                await _deny(scope, send, 403, f"this API key lacks the '{needed.value}' scope", "permission_error")
                return
        state[API_KEY_STATE] = key
        if limiter is None:
            await self._app(scope, receive, send)
            return
        decision = limiter.admit(key.id)
        if not decision.allowed:
            extra = [_retry_after(decision.retry_after_s), *decision.headers]
            await _deny(scope, send, 429, decision.reason, "rate_limit_error", code="rate_limit_exceeded", extra=extra)
            return
        state[CHARGE_STATE] = lambda tokens: limiter.charge(key.id, tokens)

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *decision.headers]}
            await send(message)

        try:
            await self._app(scope, receive, send_with_limits)
        finally:
            limiter.release(key.id)


def charge_tokens(state: dict[str, Any], tokens: int) -> None:
    """Count a reply's tokens against its key's tokens-per-minute limit (when limits are on)."""
    charge = state.get(CHARGE_STATE)
    if charge is not None:
        charge(tokens)


def route_template(routes: Sequence[Route], scope: Scope) -> str | None:
    """The path template of the route the request matches: a full match (path and method) first, else
    the first route whose path matches (a wrong method still names the route)."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route.path
        if match is Match.PARTIAL and partial is None:
            partial = route.path
    return partial


def check_declared(routes: list[Route]) -> None:
    """Refuse to start with a route whose scope is not declared."""
    undeclared = sorted({r.path for r in routes} - set(ROUTE_SCOPES) - PUBLIC_PATHS)
    if undeclared:
        raise RuntimeError(f"routes without a declared scope: {', '.join(undeclared)}")
