"""Server-sent events responses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event_stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=_HEADERS)


def sse(payload: dict[str, Any] | str) -> bytes:
    """One `data:` event; `payload` is JSON-encoded unless it is a plain string such as `[DONE]`."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"data: {data}\n\n".encode()


def named_event(kind: str, payload: dict[str, Any]) -> bytes:
    """One event with an `event:` line before its data, as Anthropic's and the Responses API's streams send."""
    return f"event: {kind}\n".encode() + sse(payload)
