"""WebSocket /v1/realtime: a live voice conversation in the events of OpenAI's Realtime API (the subset
services/realtime.py implements), scope `audio`.

The key comes as OpenAI's clients send it: an `Authorization: Bearer` header, or, from a browser
(which cannot set headers on a WebSocket), the subprotocol `openai-insecure-api-key.<key>` beside
`realtime`. A bad or missing key is refused in the handshake (HTTP 403), like a key without `audio`.
Bounds: one client event at most RealtimeLimits.max_event_bytes (close 1009), an idle connection is
closed after MOLTBOT_REALTIME_IDLE_S (1001), one that takes no event for MOLTBOT_REALTIME_SEND_TIMEOUT_S
(it stopped reading) is dropped, a session lasts at most MOLTBOT_REALTIME_MAX_SECONDS, and at
most MOLTBOT_REALTIME_MAX_SESSIONS run at once (the next is closed with 1013, try again later).

`?session_id=sess_...` (a key with the `sessions` scope, its own session) continues a stored conversation
and stores each turn in it, as the chat page's sessions do; its model answers unless `?model=` is given.
OpenAI's realtime model names (`gpt-4o-realtime-preview`, `gpt-realtime`, ...), which its SDK always
sends, stand for the voice model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import anyio
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.types import Message

from moltbot.gateway.deps import gateway_of
from moltbot.services.realtime import ClientGone, RealtimeLimits, RealtimeSession, StoredConversation
from moltbot.services.sessions import SessionNotFoundError
from moltbot.storage.keys import ApiKey, Scope

router = APIRouter()
log = logging.getLogger(__name__)
_PROTOCOL_KEY = "openai-insecure-api-key."
_OPENAI_REALTIME_MODELS = ("gpt-4o-realtime", "gpt-4o-mini-realtime", "gpt-realtime")
_active = 0


def _offered(websocket: WebSocket) -> list[str]:
    header = websocket.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def _token(websocket: WebSocket) -> str | None:
    authorization = websocket.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    for protocol in _offered(websocket):
        if protocol.startswith(_PROTOCOL_KEY):
            return protocol[len(_PROTOCOL_KEY) :]
    return None


async def _conversation(websocket: WebSocket, key: ApiKey) -> tuple[StoredConversation | None, str] | None:
    """The stored session the turns go into (if asked for) and the model that answers; None when the
    handshake was refused (the socket is closed with the reason)."""
    gateway = gateway_of(websocket)
    stored = None
    session_id = websocket.query_params.get("session_id")
    if session_id:
        if not key.allows(Scope.SESSIONS):
            await websocket.close(code=1008, reason="storing turns in a session needs the sessions scope")
            return None
        try:
            found = await gateway.sessions.get(key.id, session_id)
        except SessionNotFoundError:
            await websocket.close(code=1008, reason="no such session")
            return None
        stored = StoredConversation(gateway.sessions.repo, key.id, found)
    asked = websocket.query_params.get("model") or ""
    if asked.startswith(_OPENAI_REALTIME_MODELS):
        asked = ""  # OpenAI's clients always name one of theirs: the voice model answers
    model = asked or (stored.session.model if stored else gateway.voice_model)
    try:
        gateway.generation.generator(model)
    except Exception:  # noqa: BLE001 - any reason the model cannot answer: refused in the handshake
        await websocket.close(code=1008, reason=f"model {model[:64]!r} is not loaded")
        return None
    return stored, model


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    global _active  # noqa: PLW0603 - one count of live sessions per process
    gateway = gateway_of(websocket)
    settings = gateway.settings
    log.debug("realtime: handshake")
    token = _token(websocket)
    key = await anyio.to_thread.run_sync(gateway.keys.authenticate, token) if token else None
    log.debug("realtime: key %s", key.id if key else None)
    if key is None or not key.allows(Scope.AUDIO):
        await websocket.close(code=1008, reason="a valid key with the audio scope is needed")
        return
    if _active >= settings.realtime_max_sessions:
        await websocket.close(code=1013, reason="too many live sessions; try again later")
        return
    admitted = await _conversation(websocket, key)
    if admitted is None:
        return
    stored, model = admitted
    subprotocol = "realtime" if "realtime" in _offered(websocket) else None
    await websocket.accept(subprotocol=subprotocol)
    _active += 1
    log.info("realtime session opened (key %s, model %s, %d live)", key.id, model, _active)

    stalled = asyncio.Event()

    async def send(event: dict[str, Any]) -> None:
        """One event to the client; a client that takes none for MOLTBOT_REALTIME_SEND_TIMEOUT_S (its
        buffers full: it stopped reading) is let go, so a stuck client holds no task or memory for long."""
        if stalled.is_set():
            raise ClientGone
        text = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        try:
            await asyncio.wait_for(websocket.send_text(text), settings.realtime_send_timeout_s)
        except TimeoutError:
            stalled.set()
            raise ClientGone from None
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise ClientGone from None

    session = RealtimeSession(gateway.speech, gateway.generation, model, send, RealtimeLimits(), stored=stored)
    ends = time.monotonic() + settings.realtime_max_seconds
    try:
        await session.start()
        await _serve(websocket, session, ends, settings.realtime_idle_s, stalled)
    except (WebSocketDisconnect, RuntimeError, ClientGone):
        pass  # the client left (RuntimeError: a send after it closed) or stopped reading
    finally:
        _active -= 1
        await session.close()
        if stalled.is_set():
            log.warning("realtime session of key %s closed: the client stopped reading", key.id)
        log.info("realtime session closed (key %s)", key.id)


async def _next(websocket: WebSocket, timeout: float, stalled: asyncio.Event) -> Message | None:
    """The client's next message; None when `timeout` passes first; ClientGone when it stopped reading."""
    receiving = asyncio.ensure_future(websocket.receive())
    stalling = asyncio.ensure_future(stalled.wait())
    try:
        done, _ = await asyncio.wait({receiving, stalling}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stalling.cancel()
    if receiving in done:
        return receiving.result()
    receiving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await receiving
    if stalling in done:
        raise ClientGone
    return None


async def _serve(
    websocket: WebSocket, session: RealtimeSession, ends: float, idle_s: float, stalled: asyncio.Event
) -> None:
    """Read the client's events until it leaves, idles, stops reading, oversteps, or its time is up."""
    while True:
        left = ends - time.monotonic()
        if left <= 0:
            await websocket.close(code=1000, reason="the session reached its time limit")
            return
        message = await _next(websocket, min(left, idle_s), stalled)
        if message is None:
            await websocket.close(code=1001, reason="idle")
            return
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            await session.error("events are JSON text frames", code="invalid_event")
            continue
        if len(text) > session.limits.max_event_bytes:
            await websocket.close(code=1009, reason="event too large")
            return
        try:
            event = json.loads(text)
        except ValueError:
            await session.error("the event is not JSON", code="invalid_event")
            continue
        if not isinstance(event, dict):
            await session.error("an event is a JSON object", code="invalid_event")
            continue
        await session.handle(event)
