"""GET /v1/models and /v1/models/{model_id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    return request.app.state.serving.list_models()  # type: ignore[no-any-return]


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    return request.app.state.serving.model(model_id)  # type: ignore[no-any-return]
