"""Administration (scope `admin`): API keys, the audit log, the built-in evaluator's alerts.

Every change is written to the audit log with the acting key's id; tokens are shown once, on creation.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from moltbot.gateway.auth import API_KEY_STATE
from moltbot.gateway.deps import Audit, Keys, MonitorDep
from moltbot.gateway.errors import APIError
from moltbot.gateway.schemas import KeyCreateRequest
from moltbot.storage.keys import ApiKey, UnknownScopeError, parse_scopes

router = APIRouter()
_KEY_ID = re.compile(r"^[0-9a-f]{12}$")


def actor(request: Request) -> str:
    key: ApiKey = request.scope["state"][API_KEY_STATE]
    return f"key:{key.id}"


def _card(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "object": "api_key",
        "name": key.name,
        "scopes": sorted(s.value for s in key.scopes),
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
    }


def _key_id(key_id: str) -> str:
    if not _KEY_ID.match(key_id):
        raise APIError(400, "a key id is 12 hexadecimal characters", param="key_id", code="invalid_id")
    return key_id


@router.post("/v1/admin/keys", status_code=201)
async def create_key(body: KeyCreateRequest, request: Request, keys: Keys, audit: Audit) -> JSONResponse:
    try:
        scopes = parse_scopes(",".join(body.scopes))
    except UnknownScopeError as exc:
        raise APIError(400, str(exc), param="scopes") from None
    expires_at = time.time() + body.expires_in_days * 86400 if body.expires_in_days else None
    key, token = await asyncio.to_thread(keys.create, body.name, scopes, expires_at)
    await asyncio.to_thread(
        audit.record, actor(request), "key.create", key.id, name=key.name, scopes=sorted(s.value for s in scopes)
    )
    return JSONResponse({**_card(key), "token": token}, status_code=201)


@router.get("/v1/admin/keys")
async def list_keys(keys: Keys) -> dict[str, Any]:
    return {"object": "list", "data": [_card(k) for k in await asyncio.to_thread(keys.list)]}


@router.get("/v1/admin/keys/{key_id}")
async def get_key(key_id: str, keys: Keys) -> dict[str, Any]:
    key = await asyncio.to_thread(keys.get, _key_id(key_id))
    if key is None:
        raise APIError(404, f"no API key {key_id}", param="key_id", code="not_found")
    return _card(key)


@router.delete("/v1/admin/keys/{key_id}")
async def revoke_key(key_id: str, request: Request, keys: Keys, audit: Audit) -> dict[str, Any]:
    if not await asyncio.to_thread(keys.revoke, _key_id(key_id)):
        raise APIError(404, f"no active API key {key_id}", param="key_id", code="not_found")
    await asyncio.to_thread(audit.record, actor(request), "key.revoke", key_id)
    return {"id": key_id, "object": "api_key", "revoked": True}


@router.get("/v1/admin/audit")
async def audit_entries(
    audit: Audit,
    limit: int = Query(default=100, ge=1, le=1000),
    before: int | None = Query(default=None, ge=1, le=(1 << 63) - 1),
) -> dict[str, Any]:
    entries = await asyncio.to_thread(audit.list, limit, before)
    data = [
        {"id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "target": e.target, "details": e.details}
        for e in entries
    ]
    return {"object": "list", "data": data}


@router.get("/v1/admin/alerts")
async def list_alerts(monitor: MonitorDep) -> dict[str, Any]:
    """Pending and firing alerts, firing first."""
    if monitor is None:
        raise APIError(404, "alert evaluation is off on this server (MOLTBOT_MONITOR=false)", code="monitor_disabled")
    return {"object": "list", "data": monitor.active()}
