"""The outermost middleware: request id, Server-Timing, HTTP metrics and the access log.

Every request gets an `x-request-id` (the client's own when it sends a well-formed one), a
`server-timing: total;dur=…, engine;dur=…` header (milliseconds to the response start), one
observation in the HTTP histograms by route template (never the raw path: bounded label values),
and one structured access-log line: id, method, route, status, durations, key id. Never a body,
a query string or a secret.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Sequence

from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moltbot.gateway.auth import API_KEY_STATE, CLIENT_STATE, ROUTE_STATE, route_template
from moltbot.gateway.clients import Network, client_address
from moltbot.monitor.metrics import Metrics

ENGINE_SECONDS_KEY = "engine_seconds"
# On every response: an API's answers are not to be cached, sniffed, framed or referred.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000")
UNMATCHED_ROUTE = "unmatched"
# Label values must stay bounded: a client can send any method token.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CLIENT_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
access_log = logging.getLogger("moltbot.access")


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _CLIENT_REQUEST_ID.match(value):
            return str(value.decode("ascii"))
    return secrets.token_hex(8)


class ObserveMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[Route],
        metrics: Metrics | None,
        *,
        access: bool = True,
        tls: bool = True,
        trusted_proxies: Sequence[Network] = (),
    ) -> None:
        self._app = app
        self._routes = list(routes)
        self._metrics = metrics
        self._access = access
        self._security_headers = [*SECURITY_HEADERS, HSTS] if tls else list(SECURITY_HEADERS)
        self._trusted = list(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state[CLIENT_STATE] = client_address(scope, self._trusted)
        status, response_start = 500, 0.0
        metrics = self._metrics
        if metrics is not None:
            metrics.in_flight += 1

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_start
            if message["type"] == "http.response.start":
                response_start = time.perf_counter() - started
                status = message["status"]
                timing = f"total;dur={response_start * 1000:.3f}"
                engine = state.get(ENGINE_SECONDS_KEY)
                if engine is not None:
                    timing += f", engine;dur={engine * 1000:.3f}"
                headers = [h for h in message.get("headers", []) if h[0] != b"cache-control"]
                headers += [(b"x-request-id", request_id.encode()), (b"server-timing", timing.encode())]
                own = {name for name, _ in headers}  # a route's own policy (the chat page's CSP) wins
                headers += [header for header in self._security_headers if header[0] not in own]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self._app(scope, receive, send_with_headers)
        finally:
            duration = time.perf_counter() - started
            route = state.get(ROUTE_STATE) or route_template(self._routes, scope) or UNMATCHED_ROUTE
            method = scope["method"] if scope["method"] in _METHODS else "other"
            if metrics is not None:
                metrics.in_flight -= 1
                metrics.observe_http(method, route, status, response_start or duration, duration)
            if self._access:
                key = state.get(API_KEY_STATE)
                access_log.info(
                    "%s %s %d",
                    method,
                    route,
                    status,
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(duration * 1000, 3),
                        "response_start_ms": round((response_start or duration) * 1000, 3),
                        "key_id": key.id if key is not None else None,
                        "client": state[CLIENT_STATE],
                    },
                )
