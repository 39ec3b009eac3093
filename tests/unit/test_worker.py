"""The async bridge with a fake backend: admission limits, cancellation, time limits, errors."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence

import pytest

from moltbot.engine.errors import EngineBusyError, InvalidGrammarError, RequestTimeoutError
from moltbot.engine.types import (
    ChatMessage,
    Chunk,
    Embeddings,
    FinishReason,
    ModelInfo,
    ModelKind,
    Prompt,
    SamplingParams,
)
from moltbot.engine.worker import ModelWorker, WorkerLimits


class FakeBackend:
    """Emits one word per `delay` seconds; records whether generation was cut short."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.tokens_made = 0
        self.cancelled = threading.Event()

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("fake", ModelKind.GENERATE, "/fake", 0, 512)

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def render_chat(self, messages: Sequence[ChatMessage]) -> Prompt:
        return Prompt(tuple(self.tokenize(" ".join(m.content for m in messages))))

    def stream(self, prompt: Prompt, params: SamplingParams, cancel: threading.Event) -> Iterator[Chunk]:
        if self.fail:
            raise InvalidGrammarError("bad grammar")
        made = 0
        for _ in range(params.max_tokens):
            time.sleep(self.delay)
            made += 1
            self.tokens_made += 1
            yield Chunk("w ")
            if cancel.is_set():
                self.cancelled.set()
                yield Chunk("", FinishReason.CANCELLED, len(prompt.tokens), made)
                return
        yield Chunk("", FinishReason.LENGTH, len(prompt.tokens), made)

    def embed(self, texts: Sequence[str]) -> Embeddings:
        return Embeddings([[1.0] for _ in texts], len(texts))

    def close(self) -> None:
        pass


LIMITS = WorkerLimits(max_queue=1, queue_timeout_s=30, request_timeout_s=30)
PROMPT = Prompt((1, 2, 3))


def test_generate_collects_the_stream() -> None:
    worker = ModelWorker(FakeBackend(), LIMITS)
    done = asyncio.run(worker.generate(PROMPT, SamplingParams(max_tokens=4)))
    assert done.text == "w w w w "
    assert (done.finish_reason, done.prompt_tokens, done.completion_tokens) == (FinishReason.LENGTH, 3, 4)
    worker.close()


def test_queue_full_is_busy() -> None:
    backend = FakeBackend(delay=0.05)
    worker = ModelWorker(backend, LIMITS)

    async def scenario() -> list[object]:
        jobs = [worker.generate(PROMPT, SamplingParams(max_tokens=5)) for _ in range(4)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(scenario())
    busy = [r for r in results if isinstance(r, EngineBusyError)]
    assert len(busy) == 2  # one running + one queued are admitted
    assert all(b.retry_after_s >= 1 for b in busy)
    worker.close()
    assert worker.queue_depth == 0


def test_closing_a_stream_cancels_generation() -> None:
    backend = FakeBackend(delay=0.01)
    worker = ModelWorker(backend, LIMITS)

    async def scenario() -> None:
        stream = worker.stream(PROMPT, SamplingParams(max_tokens=10_000))
        async for _ in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]

    asyncio.run(scenario())
    assert backend.cancelled.wait(timeout=1.0)
    assert backend.tokens_made < 200
    worker.close()
    assert worker.queue_depth == 0


def test_request_time_limit() -> None:
    backend = FakeBackend(delay=0.01)
    worker = ModelWorker(backend, WorkerLimits(max_queue=1, queue_timeout_s=30, request_timeout_s=0.1))
    with pytest.raises(RequestTimeoutError):
        asyncio.run(worker.generate(PROMPT, SamplingParams(max_tokens=10_000)))
    assert backend.cancelled.wait(timeout=1.0)
    worker.close()


def test_queue_wait_limit() -> None:
    backend = FakeBackend(delay=0.05)
    worker = ModelWorker(backend, WorkerLimits(max_queue=4, queue_timeout_s=0.05, request_timeout_s=30))

    async def scenario() -> list[object]:
        jobs = [worker.generate(PROMPT, SamplingParams(max_tokens=4)) for _ in range(2)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    first, second = asyncio.run(scenario())
    assert not isinstance(first, Exception)
    assert isinstance(second, EngineBusyError)
    worker.close()


def test_backend_errors_reach_the_caller() -> None:
    worker = ModelWorker(FakeBackend(fail=True), LIMITS)
    with pytest.raises(InvalidGrammarError):
        asyncio.run(worker.generate(PROMPT, SamplingParams(max_tokens=4)))
    worker.close()
    assert worker.queue_depth == 0
