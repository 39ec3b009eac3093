"""Request id and Server-Timing headers: total time to the response start, and engine time."""

from __future__ import annotations

import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ENGINE_SECONDS_KEY = "engine_seconds"


class TimingMiddleware:
    """Adds `x-request-id` and `server-timing: total;dur=…, engine;dur=…` (milliseconds)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = secrets.token_hex(8)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                total_ms = (time.perf_counter() - started) * 1000
                timing = f"total;dur={total_ms:.3f}"
                engine = state.get(ENGINE_SECONDS_KEY)
                if engine is not None:
                    timing += f", engine;dur={engine * 1000:.3f}"
                headers = list(message.get("headers", []))
                headers += [(b"x-request-id", request_id.encode()), (b"server-timing", timing.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, send_with_headers)
