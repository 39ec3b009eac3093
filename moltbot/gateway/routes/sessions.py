"""Sessions (scope `sessions`): conversations the server keeps, each owned by the key that made it.

Another key's session answers 404, as one that does not exist. What a turn does is SessionService's
(services/sessions.py); these routes parse, call it and shape OpenAI's chat objects.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from moltbot.gateway.auth import charge_tokens, request_owner
from moltbot.gateway.deps import Sessions
from moltbot.gateway.disconnect import unless_disconnected
from moltbot.gateway.errors import APIError
from moltbot.gateway.observe import ENGINE_SECONDS_KEY
from moltbot.gateway.schemas import (
    SessionCreateRequest,
    SessionImportRequest,
    SessionMessageRequest,
    SessionUpdateRequest,
)
from moltbot.gateway.serving import chat_body, chat_events, chunk_base
from moltbot.gateway.sse import event_stream
from moltbot.services.generation import Sampling
from moltbot.sessions.export import export_document
from moltbot.storage.sessions import Message, Session

router = APIRouter()
_SESSION_ID = re.compile(r"^sess_[0-9a-f]{24}$")
_MAX_METADATA_BYTES = 16 << 10


def _checked_id(session_id: str) -> str:
    if not _SESSION_ID.match(session_id):
        raise APIError(
            400, "a session id is 'sess_' and 24 hexadecimal characters", param="session_id", code="invalid_id"
        )
    return session_id


def _check_metadata(metadata: dict[str, Any] | None) -> None:
    if metadata is not None and len(json.dumps(metadata)) > _MAX_METADATA_BYTES:
        raise APIError(400, f"metadata is limited to {_MAX_METADATA_BYTES} bytes of JSON", param="metadata")


def _message_card(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "object": "session.message",
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "created_at": message.created_at,
    }


def _card(session: Session, *, with_messages: bool = False) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": session.id,
        "object": "session",
        "model": session.model,
        "title": session.title,
        "metadata": session.metadata,
        "system_prompt": session.system_prompt,
        "created_at": session.created_at,
        "updated_at": session.updated_at,
        "message_count": session.message_count,
    }
    if with_messages:
        card["messages"] = [_message_card(m) for m in session.messages]
    return card


def _cursor(session: Session) -> str:
    return base64.urlsafe_b64encode(json.dumps([session.created_at, session.id]).encode()).decode()


def _parse_cursor(cursor: str) -> tuple[float, str]:
    try:
        created, session_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return float(created), _checked_id(str(session_id))
    except (ValueError, TypeError, binascii.Error, APIError):
        raise APIError(400, "the cursor is not one this server gave", param="after", code="invalid_cursor") from None


# -- sessions ------------------------------------------------------------------------------------


@router.post("/v1/sessions", status_code=201)
async def create_session(body: SessionCreateRequest, request: Request, sessions: Sessions) -> JSONResponse:
    _check_metadata(body.metadata)
    fields = {"title": body.title, "metadata": body.metadata, "system_prompt": body.system_prompt}
    session = await sessions.create(request_owner(request), body.model, **fields)
    return JSONResponse(_card(session), status_code=201)


@router.get("/v1/sessions")
async def list_sessions(
    request: Request,
    sessions: Sessions,
    limit: int = Query(default=20, ge=1, le=100),
    after: str | None = Query(default=None, max_length=200),
) -> dict[str, Any]:
    before = _parse_cursor(after) if after else None
    found = await sessions.page(request_owner(request), limit + 1, before)
    page = found[:limit]
    more = len(found) > limit
    return {
        "object": "list",
        "data": [_card(s) for s in page],
        "has_more": more,
        "next_cursor": _cursor(page[-1]) if more and page else None,
    }


@router.get("/v1/sessions/{session_id}")
async def get_session(session_id: str, request: Request, sessions: Sessions) -> dict[str, Any]:
    return _card(await sessions.get(request_owner(request), _checked_id(session_id)), with_messages=True)


@router.patch("/v1/sessions/{session_id}")
async def update_session(
    session_id: str, body: SessionUpdateRequest, request: Request, sessions: Sessions
) -> dict[str, Any]:
    _checked_id(session_id)
    _check_metadata(body.metadata)
    changes: dict[str, Any] = {name: getattr(body, name) for name in body.model_fields_set}
    return _card(await sessions.update(request_owner(request), session_id, **changes))


@router.delete("/v1/sessions/{session_id}")
async def delete_session(session_id: str, request: Request, sessions: Sessions) -> dict[str, Any]:
    await sessions.delete(request_owner(request), _checked_id(session_id))
    return {"id": session_id, "object": "session", "deleted": True}


@router.get("/v1/sessions/{session_id}/export")
async def export_session(session_id: str, request: Request, sessions: Sessions) -> dict[str, Any]:
    return export_document(await sessions.get(request_owner(request), _checked_id(session_id)))


@router.post("/v1/sessions/import", status_code=201)
async def import_session(body: SessionImportRequest, request: Request, sessions: Sessions) -> JSONResponse:
    _check_metadata(body.metadata)
    data = {"title": body.title, "metadata": body.metadata, "system_prompt": body.system_prompt}
    history = [m.model_dump() for m in body.messages]
    session = await sessions.import_session(request_owner(request), body.model, data, history)
    return JSONResponse(_card(session, with_messages=True), status_code=201)


# -- a turn --------------------------------------------------------------------------------------


@router.post("/v1/sessions/{session_id}/messages")
async def post_message(session_id: str, body: SessionMessageRequest, request: Request, sessions: Sessions) -> Response:
    sampling = Sampling(max_tokens=body.max_tokens, temperature=body.temperature)
    state = request.scope["state"]
    turn = await sessions.turn(request_owner(request), _checked_id(session_id), body.content, sampling)
    extra = {"session_id": session_id, "user_message_id": turn.user_message_id, "truncated_messages": turn.dropped}
    if body.stream:
        base = {**chunk_base(turn.stream.model, turn.stream.fingerprint), "session_id": session_id}
        events = chat_events(
            turn.events(),
            turn.stream,
            base,
            on_usage=lambda tokens: charge_tokens(state, tokens),
            final=lambda: {**extra, "message_id": turn.message_id},
        )
        return event_stream(events)
    result = await unless_disconnected(request, turn.answer())
    state[ENGINE_SECONDS_KEY] = result.engine_seconds
    charge_tokens(state, result.usage.total_tokens)
    return JSONResponse(chat_body(result, **extra, message_id=turn.message_id))
