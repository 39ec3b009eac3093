"""Model lifecycle (scope `admin`): versions in the store, blue-green deploy, rollback."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from moltbot.gateway.deps import Audit, Models
from moltbot.gateway.routes.admin import actor
from moltbot.gateway.schemas import DeployRequest
from moltbot.models.manager import DeployResult, LoadState, ModelManager
from moltbot.models.store import ModelStore, StoreError, UnknownModelError, Version, check_name

router = APIRouter()


def _manager(manager: ModelManager) -> tuple[ModelManager, ModelStore]:
    assert manager.store is not None  # noqa: S101 - the server always has a store
    return manager, manager.store


def _name(name: str) -> str:
    try:
        return check_name(name)
    except StoreError:
        raise UnknownModelError(f"the model {name!r} does not exist", param="name") from None


def _card(version: Version, manager: ModelManager, active: int | None) -> dict[str, Any]:
    entry = manager.entry(version.name)
    state = "on_disk"
    if entry is not None and entry.source.version == str(version.number) and entry.source.digest == version.manifest:
        state = entry.state.value
    if any(e.source.version == str(version.number) for e in manager.draining(version.name)):
        state = LoadState.DRAINING.value
    return {
        "object": "model.version",
        "model": version.name,
        "version": version.number,
        "digest": version.manifest,
        "format": version.format.value,
        "size_bytes": version.size_bytes,
        "created": version.created,
        "origin": version.origin,
        "encrypted": version.key_id is not None,
        "active": version.number == active,
        "load_state": state,
    }


@router.get("/v1/admin/models")
async def list_store(models: Models) -> dict[str, Any]:
    _, store = _manager(models)

    def read() -> list[dict[str, Any]]:
        rows = []
        for name in store.names():
            active = store.active(name)
            rows.append(
                {
                    "object": "model.store_entry",
                    "model": name,
                    "active_version": active,
                    "versions": [v.number for v in store.versions(name)],
                }
            )
        return rows

    return {"object": "list", "data": await asyncio.to_thread(read)}


@router.get("/v1/admin/models/{name}/versions")
async def list_versions(name: str, models: Models) -> dict[str, Any]:
    manager, store = _manager(models)
    versions = await asyncio.to_thread(store.versions, _name(name))
    if not versions:
        raise UnknownModelError(f"the model {name!r} does not exist", param="name")
    active = store.active(name)
    return {"object": "list", "data": [_card(v, manager, active) for v in versions]}


def _reply(result: DeployResult) -> dict[str, Any]:
    return {
        "object": "model.deployment",
        "model": result.model,
        "previous_version": int(result.previous) if result.previous and result.previous.isdigit() else None,
        "version": int(result.version),
        "unchanged": result.unchanged,
        "load_seconds": round(result.load_seconds, 3),
        "smoke_seconds": round(result.smoke_seconds, 3),
        "switch_seconds": round(result.seconds, 3),
    }


@router.post("/v1/admin/models/{name}/deploy")
async def deploy(name: str, body: DeployRequest, request: Request, models: Models, audit: Audit) -> dict[str, Any]:
    manager, _store = _manager(models)
    result = await manager.deploy(_name(name), body.version, in_place=body.in_place)
    await asyncio.to_thread(
        audit.record, actor(request), "model.deploy", name, version=result.version, previous=result.previous
    )
    return _reply(result)


@router.post("/v1/admin/models/{name}/rollback")
async def rollback(name: str, request: Request, models: Models, audit: Audit) -> dict[str, Any]:
    manager, _store = _manager(models)
    result = await manager.rollback(_name(name))
    await asyncio.to_thread(
        audit.record, actor(request), "model.rollback", name, version=result.version, previous=result.previous
    )
    return _reply(result)
