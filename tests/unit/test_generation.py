"""The generation service and the session service over a scripted worker: one set of defaults, the
limits, history fitting, usage, tool-message checks; a turn stored complete, or interrupted on a
timeout or a cancelled client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from moltbot.engine.errors import ContextLengthError, RequestTimeoutError, UnsupportedOperationError
from moltbot.engine.types import (
    ChatMessage,
    Chunk,
    FinishReason,
    ModelInfo,
    ModelKind,
    Prompt,
    Role,
    SamplingParams,
    ToolCall,
)
from moltbot.errors import InvalidRequestError
from moltbot.models.manager import ModelManager
from moltbot.services.generation import (
    ChatRequest,
    Event,
    Finish,
    GenerationService,
    Sampling,
    TextDelta,
    TextRequest,
    fit,
    total_usage,
)
from moltbot.services.sessions import SessionNotFoundError, SessionService
from moltbot.settings import Settings
from moltbot.storage.crypto import Vault
from moltbot.storage.database import create_database_engine, migrate
from moltbot.storage.keys import KeyStore, Scope
from moltbot.storage.sessions import SessionRepository

CONTEXT = 200


class _Backend:
    """One token per word; a chat renders as "role: content" lines."""

    supports_tools = False

    def render_chat(self, messages: Sequence[ChatMessage], tools: Any = None, *, prefill: str = "") -> Prompt:
        words = [w for m in messages for w in f"{m.role.value}: {m.content}".split()]
        return Prompt(tuple(range(len(words))))

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return list(range(len(text.split())))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return " ".join("w" for _ in tokens)


class _Worker:
    """Answers with a script of chunks; remembers what it was asked."""

    def __init__(self, script: list[Chunk], kind: ModelKind = ModelKind.GENERATE, hold: bool = False) -> None:
        self.info = ModelInfo("m", kind, "", 0, CONTEXT, vocab_size=100, token_level=True)
        self.backend = _Backend()
        self.script = script
        self.hold = hold  # after the script, wait until cancelled
        self.asked: list[tuple[Prompt, SamplingParams]] = []

    def streams(self, prompt: Prompt, params: SamplingParams, n: int) -> list[AsyncIterator[Chunk]]:
        self.asked.append((prompt, params))
        return [self._run() for _ in range(n)]

    async def _run(self) -> AsyncIterator[Chunk]:
        for chunk in self.script:
            yield chunk
        if self.hold:
            await asyncio.Event().wait()


class _Models:
    def __init__(self, worker: _Worker) -> None:
        self.worker = worker

    def get(self, model_id: str) -> _Worker:
        return self.worker

    def fingerprint(self, worker: object) -> str:
        return "fp_test"


def _service(worker: _Worker, **limits: Any) -> GenerationService:
    settings = Settings(**{"max_tokens_limit": 100, **limits})
    return GenerationService(cast(ModelManager, _Models(worker)), settings, "m")


def _done(text: str = "hi", reason: FinishReason = FinishReason.STOP) -> list[Chunk]:
    return [Chunk(text), Chunk("", reason, prompt_tokens=5, completion_tokens=2, cached_tokens=1)]


def _chat(*contents: str, **fields: Any) -> ChatRequest:
    roles = [Role.USER, Role.ASSISTANT]
    return ChatRequest("m", [ChatMessage(roles[i % 2], c) for i, c in enumerate(contents)], **fields)


def test_unset_sampling_takes_the_documented_defaults() -> None:
    worker = _Worker(_done())
    result = asyncio.run(_service(worker).chat(_chat("one two three")))
    prompt, params = worker.asked[0]
    assert (params.temperature, params.top_p, params.presence_penalty, params.frequency_penalty) == (1.0, 1.0, 0, 0)
    assert params.max_tokens == min(100, CONTEXT - len(prompt.tokens))  # the room left, capped by the limit
    assert result.choices[0].text == "hi" and result.choices[0].finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.cached_tokens) == (5, 2, 1)
    assert result.fingerprint == "fp_test"


@pytest.mark.parametrize(
    ("sampling", "param"),
    [
        (Sampling(max_tokens=101), "max_tokens"),
        (Sampling(max_tokens=101, max_tokens_param="max_completion_tokens"), "max_completion_tokens"),
        (Sampling(n=9), "n"),
        (Sampling(stop=tuple("abcde")), "stop"),
        (Sampling(logit_bias={"100": 1.0}), "logit_bias"),
        (Sampling(logit_bias={"x": 1.0}), "logit_bias"),
    ],
)
def test_limits_are_invalid_requests_naming_the_field(sampling: Sampling, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        asyncio.run(_service(_Worker(_done()), max_n=4).chat(_chat("hello", sampling=sampling)))
    assert caught.value.param == param


def test_max_tokens_past_the_context_is_a_context_length_error() -> None:
    with pytest.raises(ContextLengthError) as caught:
        asyncio.run(_service(_Worker(_done()), max_tokens_limit=1000).chat(_chat("a b", sampling=Sampling(500))))
    assert caught.value.param == "max_tokens"


def test_a_tool_message_must_answer_an_earlier_call() -> None:
    service = _service(_Worker(_done()))
    orphan = [ChatMessage(Role.USER, "hi"), ChatMessage(Role.TOOL, "42", tool_call_id="call_1")]
    with pytest.raises(InvalidRequestError) as caught:
        asyncio.run(service.chat(ChatRequest("m", orphan)))
    assert caught.value.param == "messages.1.tool_call_id"
    answered = [
        ChatMessage(Role.USER, "hi"),
        ChatMessage(Role.ASSISTANT, "", (ToolCall("call_1", "f", "{}"),)),
        ChatMessage(Role.TOOL, "42", tool_call_id="call_1"),
    ]
    assert asyncio.run(service.chat(ChatRequest("m", answered))).choices[0].text == "hi"


def test_tools_on_a_model_without_a_tool_template_are_refused() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(UnsupportedOperationError):
        asyncio.run(_service(_Worker(_done())).chat(_chat("hi", tools=[tool])))


def test_an_embedding_model_does_not_generate() -> None:
    with pytest.raises(UnsupportedOperationError):
        asyncio.run(_service(_Worker(_done(), ModelKind.EMBED)).chat(_chat("hi")))


def test_fit_drops_whole_turns_oldest_first_and_keeps_system_and_last() -> None:
    def render(messages: Sequence[ChatMessage]) -> Prompt:
        return Prompt(tuple(range(sum(len(m.content.split()) for m in messages))))

    system = ChatMessage(Role.SYSTEM, "s " * 10)
    history = [
        ChatMessage(Role.USER, "u " * 20),
        ChatMessage(Role.ASSISTANT, "a " * 20),
        ChatMessage(Role.ASSISTANT, "b " * 20),
        ChatMessage(Role.USER, "v " * 20),
        ChatMessage(Role.ASSISTANT, "c " * 20),
    ]
    last = ChatMessage(Role.USER, "n " * 10)
    prompt, dropped = fit(render, [system, *history, last], reserve=50, context_size=150)
    assert (len(prompt.tokens), dropped) == (10 + 40 + 10, 3)  # the first turn (3 messages) went
    prompt, dropped = fit(render, [system, *history, last], reserve=50, context_size=1000)
    assert dropped == 0 and len(prompt.tokens) == 120
    with pytest.raises(ContextLengthError):
        fit(render, [system, *history, last], reserve=185, context_size=200)


def test_usage_counts_each_prompt_once() -> None:
    finals = [Chunk("", FinishReason.STOP, 10, 3, 4), Chunk("", FinishReason.LENGTH, 10, 5, 2)]
    used = total_usage(finals, per_prompt=2)
    assert (used.prompt_tokens, used.completion_tokens, used.cached_tokens, used.total_tokens) == (10, 8, 2, 18)


def test_streamed_completion_events_and_usage() -> None:
    async def run() -> tuple[list[Event], int]:
        stream = await _service(_Worker(_done("x y"))).complete_stream(TextRequest("m", ["a b c"], echo=True))
        events = [event async for event in stream]
        return events, stream.usage().total_tokens

    events, total = asyncio.run(run())
    assert events == [TextDelta(0, "a b c"), TextDelta(0, "x y"), Finish(0, "stop")]
    assert total == 7


# -- sessions ------------------------------------------------------------------------------------


@pytest.fixture
def sessions(tmp_path: Path) -> tuple[SessionRepository, str]:
    engine = create_database_engine(None, tmp_path / "db.sqlite")
    migrate(engine)
    key, _ = KeyStore(engine).create("alice", frozenset({Scope.SESSIONS}))
    return SessionRepository(engine, Vault(engine, tmp_path / "kek")), key.id


def _stored(repo: SessionRepository, owner: str, session_id: str) -> list[tuple[str, str, str]]:
    session = repo.get(owner, session_id, with_messages=True)
    assert session is not None
    return [(m.role, m.content, m.status) for m in session.messages]


def test_a_turn_is_stored_whole(sessions: tuple[SessionRepository, str]) -> None:
    repo, owner = sessions
    service = SessionService(repo, _service(_Worker(_done("the answer"))))

    async def run() -> tuple[str, str | None]:
        session = await service.create(owner, None, system_prompt="be brief")
        turn = await service.turn(owner, session.id, "question", Sampling())
        result = await turn.answer()
        return session.id, result.choices[0].finish_reason

    session_id, finish = asyncio.run(run())
    assert finish == "stop"
    assert _stored(repo, owner, session_id) == [
        ("user", "question", "complete"),
        ("assistant", "the answer", "complete"),
    ]


def test_a_turn_that_times_out_raises_as_chat_and_is_stored_interrupted(
    sessions: tuple[SessionRepository, str],
) -> None:
    repo, owner = sessions
    service = SessionService(repo, _service(_Worker([Chunk("partial"), Chunk("", FinishReason.TIMEOUT)])))

    async def run() -> str:
        session = await service.create(owner, None)
        turn = await service.turn(owner, session.id, "question", Sampling())
        with pytest.raises(RequestTimeoutError):
            await turn.answer()
        return session.id

    session_id = asyncio.run(run())
    assert _stored(repo, owner, session_id) == [
        ("user", "question", "complete"),
        ("assistant", "partial", "interrupted"),
    ]


def test_a_cancelled_turn_keeps_what_was_said(sessions: tuple[SessionRepository, str]) -> None:
    repo, owner = sessions
    service = SessionService(repo, _service(_Worker([Chunk("so far")], hold=True)))

    async def run() -> str:
        session = await service.create(owner, None)
        turn = await service.turn(owner, session.id, "question", Sampling())
        task = asyncio.create_task(turn.answer())
        for _ in range(1000):  # bounded: until the first words are in
            if turn.stream.text():
                break
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return session.id

    session_id = asyncio.run(run())
    assert _stored(repo, owner, session_id) == [
        ("user", "question", "complete"),
        ("assistant", "so far", "interrupted"),
    ]


def test_another_keys_session_is_not_found(sessions: tuple[SessionRepository, str]) -> None:
    repo, owner = sessions
    service = SessionService(repo, _service(_Worker(_done())))

    async def run() -> None:
        session = await service.create(owner, None)
        with pytest.raises(SessionNotFoundError):
            await service.turn("someone-else", session.id, "hi", Sampling())

    asyncio.run(run())
