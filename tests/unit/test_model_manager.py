"""Blue-green deploy in the model manager with fake backends: switch, drain, refusals, rollback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from moltbot.engine.backend import Worker
from moltbot.engine.errors import ModelLoadError
from moltbot.engine.types import SamplingParams
from moltbot.engine.worker import ModelWorker, WorkerLimits
from moltbot.models.manager import (
    DeployConflictError,
    DeployError,
    InsufficientMemoryError,
    LoadState,
    ModelManager,
)
from moltbot.models.store import ModelSource, ModelStore, UnknownModelError
from tests.unit.test_model_store import bert_dir
from tests.unit.test_worker import PROMPT, FakeBackend

LIMITS = WorkerLimits(max_queue=8, queue_timeout_s=30, request_timeout_s=30)


class Factory:
    """Builds fake workers; versions listed in `broken` fail to load, in `mute` generate nothing."""

    def __init__(self) -> None:
        self.broken: set[str] = set()
        self.mute: set[str] = set()
        self.built: dict[str, ModelWorker] = {}
        self.closed: list[str] = []

    def __call__(self, source: ModelSource) -> Worker:
        if source.version in self.broken:
            raise ModelLoadError("malformed weights")
        factory = self

        class Tracked(ModelWorker):
            def close(self) -> None:
                factory.closed.append(source.version)
                super().close()

        backend = FakeBackend(delay=0.01)
        if source.version in self.mute:
            backend.stream = lambda prompt, params, cancel: iter(())  # type: ignore[method-assign]
        worker = Tracked(backend, LIMITS)
        self.built[source.version] = worker
        return worker


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "store")
    for seed in range(3):
        store.import_path("m", bert_dir(tmp_path / f"v{seed}", seed=seed), activate=seed == 0)
    return store


def start(store: ModelStore, factory: Factory, memory: int = 1 << 40) -> ModelManager:
    manager = ModelManager(factory, store=store, memory=lambda: memory, drain_timeout_s=10)
    manager.load_all(store.active_sources())
    return manager


def wait_closed(factory: Factory, version: str) -> None:
    deadline = time.monotonic() + 5
    while version not in factory.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert version in factory.closed


def test_deploy_switches_new_requests_and_drains_the_old_version(store: ModelStore) -> None:
    factory = Factory()
    manager = start(store, factory)

    async def scenario() -> None:
        old = manager.get("m")
        running = asyncio.create_task(old.generate(PROMPT, SamplingParams(max_tokens=40)))
        await asyncio.sleep(0.05)
        result = await manager.deploy("m", 2)
        assert (result.previous, result.version, result.unchanged) == ("1", "2", False)
        assert manager.get("m") is factory.built["2"]
        assert "1" not in factory.closed  # still finishing its request
        done = await running
        assert done.completion_tokens == 40

    asyncio.run(scenario())
    wait_closed(factory, "1")
    assert store.active("m") == 2 and store.previous("m") == 1
    assert manager.entry("m") is not None and manager.entry("m").state is LoadState.LOADED  # type: ignore[union-attr]
    manager.close()


def test_a_version_that_fails_to_load_or_its_smoke_test_never_serves(store: ModelStore) -> None:
    factory = Factory()
    factory.broken.add("2")
    factory.mute.add("3")
    manager = start(store, factory)
    serving = manager.get("m")
    with pytest.raises(DeployError, match="malformed weights; still serving version 1"):
        asyncio.run(manager.deploy("m", 2))
    with pytest.raises(DeployError, match="smoke test generated nothing"):
        asyncio.run(manager.deploy("m", 3))
    assert manager.get("m") is serving and store.active("m") == 1
    assert "3" in factory.closed and "1" not in factory.closed
    manager.close()


def test_memory_refusal_unless_in_place(store: ModelStore) -> None:
    factory = Factory()
    manager = start(store, factory, memory=1 << 20)
    with pytest.raises(InsufficientMemoryError, match="deploy in place"):
        asyncio.run(manager.deploy("m", 2))
    result = asyncio.run(manager.deploy("m", 2, in_place=True))
    assert result.version == "2" and "1" in factory.closed and manager.get("m") is factory.built["2"]
    manager.close()


def test_rollback_conflicts_and_unknowns(store: ModelStore) -> None:
    factory = Factory()
    manager = start(store, factory)
    with pytest.raises(DeployConflictError, match="no earlier version"):
        asyncio.run(manager.rollback("m"))
    asyncio.run(manager.deploy("m", 3))
    back = asyncio.run(manager.rollback("m"))
    assert (back.previous, back.version) == ("3", "1") and store.active("m") == 1
    assert asyncio.run(manager.deploy("m", 1)).unchanged
    with pytest.raises(UnknownModelError):
        asyncio.run(manager.deploy("m", 9))
    with pytest.raises(UnknownModelError):
        asyncio.run(manager.deploy("other", None))

    async def two_at_once() -> tuple[object, ...]:
        return await asyncio.gather(manager.deploy("m", 2), manager.deploy("m", 3), return_exceptions=True)

    outcomes = asyncio.run(two_at_once())
    assert sum(isinstance(o, DeployConflictError) for o in outcomes) == 1
    manager.close()


def test_a_version_looked_up_by_a_request_stays_loaded_until_the_request_ends(store: ModelStore) -> None:
    factory = Factory()
    manager = start(store, factory)

    async def scenario() -> None:
        with manager.requests_scope():
            old = manager.get("m")  # looked up, not admitted yet (say, still tokenizing)
            await manager.deploy("m", 2)
            await asyncio.sleep(0.3)
            assert "1" not in factory.closed
            done = await old.generate(PROMPT, SamplingParams(max_tokens=3))
            assert done.completion_tokens == 3
        assert manager.get("m") is factory.built["2"]

    asyncio.run(scenario())
    wait_closed(factory, "1")
    manager.close()


def test_system_fingerprint_follows_the_model_version_and_engine_build(monkeypatch: pytest.MonkeyPatch) -> None:
    from moltbot.models import manager
    from moltbot.models.store import ModelFormat, ModelSource

    one = ModelSource("m", Path("m.gguf"), ModelFormat.GGUF, "1", "sha256:" + "a" * 64)
    two = ModelSource("m", Path("m.gguf"), ModelFormat.GGUF, "2", "sha256:" + "b" * 64)
    first = manager.system_fingerprint(one)
    assert first.startswith("fp_") and len(first) == 15
    assert manager.system_fingerprint(one) == first
    assert manager.system_fingerprint(two) != first
    monkeypatch.setattr(manager, "engine_build", lambda: "moltbot-9+llama-cpp-python-9")
    assert manager.system_fingerprint(one) != first
