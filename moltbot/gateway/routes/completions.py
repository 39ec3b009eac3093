"""POST /v1/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from moltbot.gateway.observe import ENGINE_SECONDS_KEY
from moltbot.gateway.schemas import CompletionRequest
from moltbot.gateway.sse import event_stream

router = APIRouter()


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    serving = request.app.state.serving
    if body.stream:
        return event_stream(await serving.completion_stream(body))
    reply = await serving.completion(body)
    request.scope["state"][ENGINE_SECONDS_KEY] = reply.engine_seconds
    return JSONResponse(reply.body)
