"""POST /v1/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from moltbot.gateway.auth import charge_tokens
from moltbot.gateway.deps import Serving
from moltbot.gateway.disconnect import unless_disconnected
from moltbot.gateway.observe import ENGINE_SECONDS_KEY
from moltbot.gateway.schemas import CompletionRequest
from moltbot.gateway.sse import event_stream

router = APIRouter()


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, serving: Serving) -> Response:
    state = request.scope["state"]
    if body.stream:
        return event_stream(await serving.completion_stream(body, on_usage=lambda tokens: charge_tokens(state, tokens)))
    reply = await unless_disconnected(request, serving.completion(body))
    state[ENGINE_SECONDS_KEY] = reply.engine_seconds
    charge_tokens(state, reply.body["usage"]["total_tokens"])
    return JSONResponse(reply.body)
