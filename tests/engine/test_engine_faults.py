"""Engine faults on the real model: one sequence whose sampling raises fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from moltbot.engine import llm_engine
from moltbot.engine.batching_worker import BatchingWorker
from moltbot.engine.errors import EngineError
from moltbot.engine.llama_model import LlamaModelFile
from moltbot.engine.runner import RunnerOptions
from moltbot.engine.sampler import Sampler
from moltbot.engine.types import Prompt, SamplingParams
from moltbot.engine.worker import WorkerLimits
from tests.helpers import CHAT_MODEL


@pytest.fixture
def worker(bundled_cache: Path) -> Iterator[BatchingWorker]:
    from tests.helpers import bundled_gguf

    model = LlamaModelFile(CHAT_MODEL, bundled_gguf(bundled_cache), 512)
    batching = BatchingWorker(model, RunnerOptions(4, 512, 128, 2), WorkerLimits(8, 30, 60))
    yield batching
    batching.close()


class ExplodingSampler(Sampler):
    def sample(self, ctx: object, index: int = -1) -> int:  # type: ignore[override]
        raise RuntimeError("boom")


def test_a_sampling_failure_ends_that_request_alone(worker: BatchingWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    real = llm_engine.Sampler

    def choose(vocab: object, n_vocab: int, config: llm_engine.SamplerConfig) -> Sampler:
        kind = ExplodingSampler if config.seed == 666 else real
        return kind(vocab, n_vocab, config)  # type: ignore[arg-type]

    monkeypatch.setattr(llm_engine, "Sampler", choose)
    model = worker.backend
    prompt = Prompt(tuple(model.tokenize("1, 2, 3, 4,")))

    async def scenario() -> list[object]:
        good = [worker.generate(prompt, SamplingParams(max_tokens=16, temperature=0, seed=s)) for s in (1, 2)]
        bad = worker.generate(prompt, SamplingParams(max_tokens=16, temperature=0, seed=666))
        return await asyncio.gather(*good, bad, return_exceptions=True)

    first, second, failed = asyncio.run(scenario())
    assert isinstance(failed, EngineError) and failed.message == "sampling failed"
    for result in (first, second):
        assert not isinstance(result, BaseException)
        assert result.completion_tokens == 16  # type: ignore[union-attr]
    assert worker.queue_depth == 0
