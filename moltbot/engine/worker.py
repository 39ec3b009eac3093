"""Runs one backend on its own thread and bridges it to asyncio with a bounded admission queue.

One thread owns the model (llama.cpp contexts are not thread-safe). Requests beyond
`max_queue` waiting are refused at once; a request that waits longer than `queue_timeout_s`
is refused when its turn comes; a cancelled stream stops at the next token.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from moltbot.engine.backend import Backend
from moltbot.engine.errors import (
    EngineBusyError,
    ModelNotReadyError,
    RequestTimeoutError,
    UnsupportedOperationError,
)
from moltbot.engine.logprobs import TokenLogprob
from moltbot.engine.types import (
    Chunk,
    Completion,
    Embeddings,
    EmbedInput,
    FinishReason,
    ModelInfo,
    Prompt,
    SamplingParams,
)

T = TypeVar("T")
_END = object()


async def collect(chunks: AsyncIterator[Chunk]) -> Completion:
    """Gather a stream into one completion; raises RequestTimeoutError past the request time limit."""
    pieces: list[str] = []
    logprobs: list[TokenLogprob] = []
    last = Chunk("")
    async for chunk in chunks:
        pieces.append(chunk.text)
        logprobs.extend(chunk.logprobs)
        last = chunk
    if last.finish_reason is FinishReason.TIMEOUT:
        raise RequestTimeoutError("generation exceeded the request time limit")
    reason = last.finish_reason or FinishReason.STOP
    return Completion(
        "".join(pieces),
        reason,
        last.prompt_tokens,
        last.completion_tokens,
        last.cached_tokens,
        tuple(logprobs),
        last.stop_sequence,
    )


@dataclass(slots=True, frozen=True)
class WorkerLimits:
    max_queue: int
    queue_timeout_s: float
    request_timeout_s: float


class ModelWorker:
    """The async face of one loaded model."""

    def __init__(self, backend: Backend, limits: WorkerLimits) -> None:
        self._backend = backend
        self._limits = limits
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{backend.info.id}")
        self._admitted = 0
        self._closed = False
        self._lock = threading.Lock()

    @property
    def info(self) -> ModelInfo:
        return self._backend.info

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def queue_depth(self) -> int:
        return self._admitted

    def _admit(self) -> None:
        with self._lock:
            if self._closed:
                raise ModelNotReadyError(f"this version of {self.info.id!r} was unloaded; retry", retry_after_s=1)
            if self._admitted >= self._limits.max_queue + 1:
                raise EngineBusyError(f"model {self.info.id!r} is busy; retry later", retry_after_s=1)
            self._admitted += 1

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the engine thread, after admission."""
        self._admit()
        enqueued = time.monotonic()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._timed(fn, enqueued))
        finally:
            self._release()

    def _timed(self, fn: Callable[[], T], enqueued: float) -> Callable[[], T]:
        def run() -> T:
            self._check_queue_wait(enqueued)
            return fn()

        return run

    def _check_queue_wait(self, enqueued: float) -> None:
        if time.monotonic() - enqueued > self._limits.queue_timeout_s:
            raise EngineBusyError("request waited too long for the model; retry later", retry_after_s=2)

    async def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return await self.call(lambda: self._backend.tokenize(text, add_special=add_special))

    async def embed(self, inputs: Sequence[EmbedInput], *, truncate: bool = False) -> Embeddings:
        """Embed on the engine thread; a caller that stops waiting (client gone) stops it between batches."""
        cancel = threading.Event()
        try:
            return await self.call(lambda: self._backend.embed(inputs, truncate=truncate, cancel=cancel))
        finally:
            cancel.set()

    def streams(self, prompt: Prompt, params: SamplingParams, n: int) -> list[AsyncIterator[Chunk]]:
        if n != 1:
            raise UnsupportedOperationError(f"model {self.info.id!r} gives one completion per request", param="n")
        return [self.stream(prompt, params)]

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Completion:
        return await collect(self.stream(prompt, params))

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Chunk]:
        """Stream chunks; closing the iterator (client gone) stops generation at the next token."""
        self._admit()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()
        deadline = time.monotonic() + self._limits.request_timeout_s
        enqueued = time.monotonic()

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                cancel.set()

        def produce() -> None:
            timed_out = False
            try:
                self._check_queue_wait(enqueued)
                for chunk in self._backend.stream(prompt, params, cancel):
                    if timed_out:
                        continue  # the backend stops at its next token; drain it quietly
                    put(chunk)
                    if time.monotonic() > deadline and chunk.finish_reason is None:
                        timed_out = True
                        cancel.set()
                        put(Chunk("", FinishReason.TIMEOUT))
            except Exception as exc:  # noqa: BLE001 - forwarded to the awaiting coroutine
                put(exc)
            finally:
                self._release()
                put(_END)

        loop.run_in_executor(self._executor, produce)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, Chunk)  # noqa: S101 - queue carries only these
                yield item
                if item.finish_reason is FinishReason.TIMEOUT:
                    break
        finally:
            cancel.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._backend.close()
