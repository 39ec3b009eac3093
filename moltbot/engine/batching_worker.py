"""The async face of a batching engine: admission, per-request streams, cancellation on close."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from moltbot.engine.errors import EngineBusyError, ModelNotReadyError, UnsupportedOperationError
from moltbot.engine.kv_cache import HostKVCache
from moltbot.engine.kv_disk import DiskKVCache
from moltbot.engine.llama_model import LlamaModelFile
from moltbot.engine.llm_engine import END, LLMEngine
from moltbot.engine.runner import LlamaRunner, RunnerOptions
from moltbot.engine.scheduler import Scheduler
from moltbot.engine.sequence import Sequence as EngineSequence
from moltbot.engine.stats import EngineStats
from moltbot.engine.types import Chunk, Completion, Embeddings, EmbedInput, ModelInfo, Prompt, SamplingParams
from moltbot.engine.worker import WorkerLimits, collect


class BatchingWorker:
    """Many requests at once on one model: up to `slots` run together, `max_queue` more wait."""

    def __init__(
        self,
        model: LlamaModelFile,
        options: RunnerOptions,
        limits: WorkerLimits,
        disk_cache: DiskKVCache | None = None,
    ) -> None:
        self._model = model
        self._limits = limits
        self._capacity = options.slots + limits.max_queue
        self._in_flight = 0
        self._closed = False
        self._lock = threading.Lock()
        runner = LlamaRunner(model, options)
        scheduler = Scheduler(options.slots, options.batch_size, exact=options.exact)
        host = None
        if options.host_cache_bytes > 0:
            spill = None if disk_cache is None else (lambda state: disk_cache.put(state.tokens, state.data))
            host = HostKVCache(options.host_cache_bytes, spill)
        self._engine = LLMEngine(
            model,
            runner,
            scheduler,
            options.context_per_slot,
            limits.queue_timeout_s,
            host_cache=host,
            disk_cache=disk_cache if host is not None else None,
        )
        self._runner = runner

    @property
    def info(self) -> ModelInfo:
        return self._model.info

    @property
    def backend(self) -> LlamaModelFile:
        return self._model

    @property
    def queue_depth(self) -> int:
        return self._in_flight

    @property
    def stats(self) -> EngineStats:
        return self._engine.stats

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Chunk]:
        """Admit and submit now (raising EngineBusyError when full); iterate for the sequence's chunks."""
        return self.streams(prompt, params, 1)[0]

    def streams(self, prompt: Prompt, params: SamplingParams, n: int) -> list[AsyncIterator[Chunk]]:
        """`n` completions of one prompt: the prompt is computed once and its KV copied to the others."""
        self._admit_many(n)
        parent: EngineSequence | None = None
        out = []
        for index in range(n):
            seed = None if params.seed is None else params.seed + index
            seq, chunks = self._sequence(prompt, replace(params, seed=seed), parent)
            parent = parent or seq
            out.append(chunks)
        return out

    def _admit_many(self, n: int) -> None:
        with self._lock:
            if self._closed:
                raise ModelNotReadyError(f"this version of {self.info.id!r} was unloaded; retry", retry_after_s=1)
            if self._in_flight + n > self._capacity:
                raise EngineBusyError(f"model {self.info.id!r} is busy; retry later", retry_after_s=1)
            self._in_flight += n

    def _sequence(
        self, prompt: Prompt, params: SamplingParams, parent: EngineSequence | None
    ) -> tuple[EngineSequence, AsyncIterator[Chunk]]:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: object) -> None:
            if item is END:
                self._release()
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, item)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                cancel.set()

        now = time.monotonic()
        seq = EngineSequence(prompt, params, emit, cancel, now, now + self._limits.request_timeout_s, after=parent)
        self._engine.submit(seq)
        return seq, self._chunks(inbox, cancel)

    @staticmethod
    async def _chunks(inbox: asyncio.Queue[object], cancel: threading.Event) -> AsyncIterator[Chunk]:
        try:
            while (item := await inbox.get()) is not END:
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, Chunk)  # noqa: S101 - the engine emits only these
                yield item
        finally:
            cancel.set()

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Completion:
        return await collect(self.stream(prompt, params))

    async def embed(self, inputs: Sequence[EmbedInput], *, truncate: bool = False) -> Embeddings:
        raise UnsupportedOperationError(f"model {self.info.id!r} does not serve embeddings", param="model")

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._engine.close()
        self._runner.close()
        self._model.close()
