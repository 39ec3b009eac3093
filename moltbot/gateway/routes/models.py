"""GET /v1/models and /v1/models/{model_id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from moltbot.gateway.deps import Serving

router = APIRouter()


@router.get("/v1/models")
async def list_models(serving: Serving) -> dict[str, Any]:
    return serving.list_models()


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, serving: Serving) -> dict[str, Any]:
    return serving.model(model_id)
