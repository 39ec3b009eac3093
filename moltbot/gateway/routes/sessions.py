"""Sessions (scope `sessions`): conversations the server keeps, each owned by the key that made it.

Another key's session answers 404, as one that does not exist. A turn stores the user's message before
generating (durable when the answer starts) and the answer when it is complete; a stream the client
leaves stores what was generated, marked `interrupted`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from moltbot.engine.backend import Worker
from moltbot.engine.errors import RequestTimeoutError
from moltbot.engine.types import Chunk, FinishReason, SamplingParams
from moltbot.gateway.auth import API_KEY_STATE, charge_tokens
from moltbot.gateway.deps import CurrentSettings, Serving, Sessions
from moltbot.gateway.disconnect import ClientDisconnectedError, unless_disconnected
from moltbot.gateway.errors import APIError, envelope
from moltbot.gateway.observe import ENGINE_SECONDS_KEY
from moltbot.gateway.schemas import (
    SessionCreateRequest,
    SessionImportRequest,
    SessionMessageRequest,
    SessionUpdateRequest,
)
from moltbot.gateway.serving import DEFAULT_TEMPERATURE, chunk_base, finish_reason, usage
from moltbot.gateway.sse import event_stream, sse
from moltbot.sessions.context import fit
from moltbot.sessions.export import export_document
from moltbot.storage.sessions import Message, Session, SessionRepository

log = logging.getLogger(__name__)
router = APIRouter()
_SESSION_ID = re.compile(r"^sess_[0-9a-f]{24}$")
_MAX_METADATA_BYTES = 16 << 10
_LONG_TEXT = 16_384


def _owner(request: Request) -> str:
    return str(request.scope["state"][API_KEY_STATE].id)


def _checked_id(session_id: str) -> str:
    if not _SESSION_ID.match(session_id):
        raise APIError(
            400, "a session id is 'sess_' and 24 hexadecimal characters", param="session_id", code="invalid_id"
        )
    return session_id


def _not_found(session_id: str) -> APIError:
    return APIError(404, f"no session {session_id}", param="session_id", code="session_not_found")


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
async def create_session(
    body: SessionCreateRequest, request: Request, serving: Serving, repo: Sessions
) -> JSONResponse:
    model = body.model or serving.default_model
    serving.generator(model)
    _check_metadata(body.metadata)
    session = await asyncio.to_thread(
        repo.create,
        _owner(request),
        model,
        title=body.title,
        metadata=body.metadata,
        system_prompt=body.system_prompt,
    )
    return JSONResponse(_card(session), status_code=201)


@router.get("/v1/sessions")
async def list_sessions(
    request: Request,
    repo: Sessions,
    limit: int = Query(default=20, ge=1, le=100),
    after: str | None = Query(default=None, max_length=200),
) -> dict[str, Any]:
    before = _parse_cursor(after) if after else None
    found = await asyncio.to_thread(repo.list, _owner(request), limit + 1, before)
    page = found[:limit]
    more = len(found) > limit
    return {
        "object": "list",
        "data": [_card(s) for s in page],
        "has_more": more,
        "next_cursor": _cursor(page[-1]) if more and page else None,
    }


@router.get("/v1/sessions/{session_id}")
async def get_session(session_id: str, request: Request, repo: Sessions) -> dict[str, Any]:
    session = await asyncio.to_thread(repo.get, _owner(request), _checked_id(session_id), with_messages=True)
    if session is None:
        raise _not_found(session_id)
    return _card(session, with_messages=True)


@router.patch("/v1/sessions/{session_id}")
async def update_session(
    session_id: str, body: SessionUpdateRequest, request: Request, repo: Sessions
) -> dict[str, Any]:
    _checked_id(session_id)
    _check_metadata(body.metadata)
    changes: dict[str, Any] = {name: getattr(body, name) for name in body.model_fields_set}
    session = await asyncio.to_thread(repo.update, _owner(request), session_id, **changes)
    if session is None:
        raise _not_found(session_id)
    return _card(session)


@router.delete("/v1/sessions/{session_id}")
async def delete_session(session_id: str, request: Request, repo: Sessions) -> dict[str, Any]:
    if not await asyncio.to_thread(repo.delete, _owner(request), _checked_id(session_id)):
        raise _not_found(session_id)
    return {"id": session_id, "object": "session", "deleted": True}


@router.get("/v1/sessions/{session_id}/export")
async def export_session(session_id: str, request: Request, repo: Sessions) -> dict[str, Any]:
    session = await asyncio.to_thread(repo.get, _owner(request), _checked_id(session_id), with_messages=True)
    if session is None:
        raise _not_found(session_id)
    return export_document(session)


@router.post("/v1/sessions/import", status_code=201)
async def import_session(body: SessionImportRequest, request: Request, repo: Sessions) -> JSONResponse:
    _check_metadata(body.metadata)
    data = {"title": body.title, "metadata": body.metadata, "system_prompt": body.system_prompt}
    history = [m.model_dump() for m in body.messages]
    session = await asyncio.to_thread(repo.import_session, _owner(request), body.model, data, history)
    return JSONResponse(_card(session, with_messages=True), status_code=201)


# -- a turn --------------------------------------------------------------------------------------


@router.post("/v1/sessions/{session_id}/messages")
async def post_message(
    session_id: str,
    body: SessionMessageRequest,
    request: Request,
    *,
    serving: Serving,
    repo: Sessions,
    settings: CurrentSettings,
) -> Response:
    owner = _owner(request)
    session = await asyncio.to_thread(repo.get, owner, _checked_id(session_id), with_messages=True)
    if session is None:
        raise _not_found(session_id)
    worker: Worker = serving.generator(session.model)
    if body.max_tokens is not None and body.max_tokens > settings.max_tokens_limit:
        raise APIError(400, f"max_tokens must be at most {settings.max_tokens_limit}", param="max_tokens")
    # The history is cut so that the answer has max_tokens (or, unset, at least 512 tokens) of room; an
    # unset max_tokens then lets the answer use the room left, as chat completions does.
    max_tokens = body.max_tokens or min(settings.max_tokens_limit, 512)
    history = [(m.role, m.content) for m in session.messages]
    args = (worker.backend, session.system_prompt, history, body.content)
    kwargs = {"max_tokens": max_tokens, "context_size": worker.info.context_size}
    long = len(body.content) + sum(len(c) for _, c in history) > _LONG_TEXT
    turn = await asyncio.to_thread(fit, *args, **kwargs) if long else fit(*args, **kwargs)  # type: ignore[arg-type]
    user = await asyncio.to_thread(repo.add_message, owner, session_id, "user", body.content)
    if user is None:  # deleted meanwhile
        raise _not_found(session_id)
    if body.max_tokens is None:
        max_tokens = min(settings.max_tokens_limit, worker.info.context_size - len(turn.prompt.tokens))
    temperature = DEFAULT_TEMPERATURE if body.temperature is None else body.temperature
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
    (stream,) = worker.streams(turn.prompt, params, 1)
    extra = {"session_id": session_id, "user_message_id": user.id, "truncated_messages": turn.dropped}
    state = request.scope["state"]
    fingerprint = serving.fingerprint(worker)
    if body.stream:
        first = await anext(aiter(stream))  # admission errors become HTTP errors, not broken streams
        base = {**chunk_base(worker.info.id, fingerprint), "session_id": session_id}
        return event_stream(_turn_events(repo, owner, base, first, stream, extra=extra, state=state))
    started = time.perf_counter()
    pieces: list[str] = []
    last = Chunk("")

    async def generate() -> None:
        nonlocal last
        async for chunk in stream:
            pieces.append(chunk.text)
            last = chunk

    try:
        await unless_disconnected(request, generate())
    except ClientDisconnectedError:  # stopped for nobody: keep what was said, as for a stream
        await asyncio.to_thread(repo.add_message, owner, session_id, "assistant", "".join(pieces), status="interrupted")
        raise
    state[ENGINE_SECONDS_KEY] = time.perf_counter() - started
    text = "".join(pieces)
    if last.finish_reason is FinishReason.TIMEOUT:  # as chat answers it: 504, and the answer is not complete
        await asyncio.to_thread(repo.add_message, owner, session_id, "assistant", text, status="interrupted")
        raise RequestTimeoutError("generation exceeded the request time limit")
    answer = await asyncio.to_thread(repo.add_message, owner, session_id, "assistant", text)
    used = _usage(last)
    charge_tokens(state, used["total_tokens"])
    return JSONResponse(
        {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": worker.info.id,
            "system_fingerprint": fingerprint,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason(last.finish_reason),
                }
            ],
            "usage": used,
            **extra,
            "message_id": answer.id if answer else None,
        }
    )


def _usage(last: Chunk) -> dict[str, Any]:
    return usage(last.prompt_tokens, last.completion_tokens, last.cached_tokens)


async def _turn_events(
    repo: SessionRepository,
    owner: str,
    base: dict[str, Any],
    first: Chunk,
    stream: AsyncIterator[Chunk],
    *,
    extra: dict[str, Any],
    state: dict[str, Any],
) -> AsyncIterator[bytes]:

    def event(delta: dict[str, Any], finish: str | None) -> bytes:
        return sse({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    pieces: list[str] = []
    finished = False
    try:
        yield event({"role": "assistant", "content": ""}, None)
        chunk = first
        while True:
            pieces.append(chunk.text)
            if chunk.text:
                yield event({"content": chunk.text}, None)
            if chunk.finish_reason is not None:
                if chunk.finish_reason is FinishReason.TIMEOUT:
                    yield sse(envelope("generation exceeded the request time limit", "timeout", code="timeout"))
                    break
                finished = True
                answer = await asyncio.to_thread(
                    repo.add_message, owner, extra["session_id"], "assistant", "".join(pieces)
                )
                used = _usage(chunk)
                charge_tokens(state, used["total_tokens"])
                yield event({}, finish_reason(chunk.finish_reason))
                final = {**base, "choices": [], "usage": used, **extra}
                yield sse({**final, "message_id": answer.id if answer else None})
                break
            chunk = await anext(stream)
        yield sse("[DONE]")
    finally:
        if not finished:  # the client left, or the request ran out of time: keep what was said
            try:  # on the event loop: a cancelled task cannot await any more; one small write
                repo.add_message(owner, extra["session_id"], "assistant", "".join(pieces), status="interrupted")
            except Exception:
                log.exception("could not store an interrupted answer")
