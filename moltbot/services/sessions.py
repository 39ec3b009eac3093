"""Conversations the server keeps: a turn is the session's history through the generation service,
stored as it happens.

The user's message is stored before generating (durable once the answer starts), the answer when it is
complete. An answer that does not complete (its client left, or it ran past the request time limit) is
stored with what was generated, marked `interrupted`, and the error is the one chat gives (a timeout is
a RequestTimeoutError). The history is cut, oldest turns first, when it outgrows the context; the system
prompt and the new message are always kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from moltbot.engine.errors import ContextLengthError
from moltbot.engine.types import ChatMessage, Role
from moltbot.errors import MoltbotError
from moltbot.services.generation import (
    ChatRequest,
    Choice,
    Event,
    Finish,
    Generation,
    GenerationService,
    GenerationStream,
    Sampling,
)
from moltbot.storage.sessions import Session, SessionRepository

log = logging.getLogger(__name__)
_ROLES = {"system": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT}


class SessionNotFoundError(MoltbotError):
    """No session of that id belongs to the caller (another key's session is not found either)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"no session {session_id}", param="session_id")


class Turn:
    """A started turn: its events (the answer stored on the last), or its whole answer."""

    def __init__(
        self, repo: SessionRepository, owner: str, session_id: str, user_message_id: str, stream: GenerationStream
    ) -> None:
        self.session_id = session_id
        self.user_message_id = user_message_id
        self.stream = stream
        self.message_id: str | None = None  # the stored answer's, once complete
        self._repo = repo
        self._owner = owner

    @property
    def dropped(self) -> int:
        return self.stream.dropped

    async def events(self) -> AsyncIterator[Event]:
        finished = False
        try:
            async for event in self.stream:
                if isinstance(event, Finish):
                    answer = await asyncio.to_thread(self._store, "complete")
                    self.message_id = answer
                    finished = True
                yield event
        finally:
            if not finished:  # the client left, or the time ran out: keep what was said
                try:  # on the event loop: a cancelled task cannot await any more; one small write
                    self._store("interrupted")
                except Exception:
                    log.exception("could not store an interrupted answer")

    async def answer(self) -> Generation:
        """Generate the whole answer (stored as events() stores it)."""
        started = time.perf_counter()
        finish: str | None = None
        async for event in self.events():
            if isinstance(event, Finish):
                finish = event.reason
        stream = self.stream
        choice = Choice(0, stream.text(), finish)
        seconds = time.perf_counter() - started
        return Generation(stream.model, stream.fingerprint, [choice], stream.usage(), seconds, stream.dropped)

    def _store(self, status: str) -> str | None:
        message = self._repo.add_message(self._owner, self.session_id, "assistant", self.stream.text(), status=status)
        return message.id if message is not None else None


class SessionService:
    def __init__(self, repo: SessionRepository, generation: GenerationService) -> None:
        self.repo = repo
        self.generation = generation

    async def create(self, owner: str, model: str | None, **fields: Any) -> Session:
        """A new session on `model` (the server's default chat model if None)."""
        model = model or self.generation.default_model
        self.generation.generator(model)
        return await asyncio.to_thread(self.repo.create, owner, model, **fields)

    async def page(self, owner: str, limit: int, before: tuple[float, str] | None) -> list[Session]:
        return await asyncio.to_thread(self.repo.list, owner, limit, before)

    async def get(self, owner: str, session_id: str) -> Session:
        """The session with its messages."""
        session = await asyncio.to_thread(self.repo.get, owner, session_id, with_messages=True)
        if session is None:
            raise SessionNotFoundError(session_id)
        return session

    async def update(self, owner: str, session_id: str, **changes: Any) -> Session:
        session = await asyncio.to_thread(self.repo.update, owner, session_id, **changes)
        if session is None:
            raise SessionNotFoundError(session_id)
        return session

    async def delete(self, owner: str, session_id: str) -> None:
        if not await asyncio.to_thread(self.repo.delete, owner, session_id):
            raise SessionNotFoundError(session_id)

    async def import_session(
        self, owner: str, model: str, fields: dict[str, Any], history: list[dict[str, Any]]
    ) -> Session:
        return await asyncio.to_thread(self.repo.import_session, owner, model, fields, history)

    async def turn(self, owner: str, session_id: str, content: str, sampling: Sampling) -> Turn:
        """Store the user's message and start the answer; errors before it starts store nothing."""
        session = await self.get(owner, session_id)
        messages = [ChatMessage(Role.SYSTEM, session.system_prompt)] if session.system_prompt else []
        messages += [ChatMessage(_ROLES[m.role], m.content) for m in session.messages]
        messages.append(ChatMessage(Role.USER, content))
        request = ChatRequest(session.model, messages, replace(sampling, n=1), truncate_history=True)
        try:
            job = await self.generation.prepare_chat(request)
        except ContextLengthError as exc:
            exc.param = "content" if exc.param == "messages" else exc.param
            raise
        user = await asyncio.to_thread(self.repo.add_message, owner, session_id, "user", content)
        if user is None:  # deleted meanwhile
            raise SessionNotFoundError(session_id)
        stream = await self.generation.start(job)
        return Turn(self.repo, owner, session_id, user.id, stream)
