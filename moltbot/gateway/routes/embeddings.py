"""POST /v1/embeddings."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from moltbot.gateway.auth import charge_tokens
from moltbot.gateway.deps import Serving
from moltbot.gateway.disconnect import unless_disconnected
from moltbot.gateway.observe import ENGINE_SECONDS_KEY
from moltbot.gateway.schemas import EmbeddingRequest

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request, serving: Serving) -> JSONResponse:
    reply = await unless_disconnected(request, serving.embeddings(body))
    request.scope["state"][ENGINE_SECONDS_KEY] = reply.engine_seconds
    charge_tokens(request.scope["state"], reply.body["usage"]["total_tokens"])
    return JSONResponse(reply.body)
