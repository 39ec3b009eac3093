"""Administration: the built-in evaluator's alerts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from moltbot.gateway.errors import APIError

router = APIRouter()


@router.get("/v1/admin/alerts")
async def list_alerts(request: Request) -> dict[str, Any]:
    """Pending and firing alerts, firing first."""
    monitor = request.app.state.monitor
    if monitor is None:
        raise APIError(404, "alert evaluation is off on this server (MOLTBOT_MONITOR=false)", code="monitor_disabled")
    return {"object": "list", "data": monitor.active()}
