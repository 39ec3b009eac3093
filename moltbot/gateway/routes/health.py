"""Liveness and readiness: the only routes open without a key."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from moltbot.gateway.deps import Models
from moltbot.gateway.errors import envelope

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", include_in_schema=False)
async def readyz(models: Models) -> JSONResponse:
    if models.is_ready:
        return JSONResponse({"status": "ready"})
    body = envelope("models are still loading", "server_overloaded", code="model_loading")
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
