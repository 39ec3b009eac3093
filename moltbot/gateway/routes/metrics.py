"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from moltbot.gateway.deps import Registry

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(registry: Registry) -> Response:
    # Off the event loop: collectors read /proc and may take a fresh resource sample.
    body = await asyncio.to_thread(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
