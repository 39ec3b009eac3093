"""Loads the models found in the store and hands out their workers."""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from moltbot.engine.backend import Worker
from moltbot.engine.errors import EngineError, ModelNotReadyError
from moltbot.models.store import ModelSource

log = logging.getLogger(__name__)

WorkerFactory = Callable[[ModelSource], Worker]
# Told of every load attempt: model id, version, whether it succeeded, seconds it took.
LoadObserver = Callable[[str, str, bool, float], None]


class LoadState(enum.StrEnum):
    PENDING = "pending"
    LOADED = "loaded"
    FAILED = "failed"


class ModelNotFoundError(EngineError):
    """No model of that id is known."""


@dataclass(slots=True)
class ModelEntry:
    source: ModelSource
    state: LoadState = LoadState.PENDING
    worker: Worker | None = None
    error: str = ""
    load_seconds: float = 0.0


class ModelManager:
    """Every known model, its load state, and its worker once loaded."""

    def __init__(self, factory: WorkerFactory, on_load: LoadObserver | None = None) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self._factory = factory
        self.on_load = on_load
        self._done = threading.Event()

    @property
    def is_ready(self) -> bool:
        """All loads attempted and at least one model serving."""
        return self._done.is_set() and any(e.state is LoadState.LOADED for e in self._entries.values())

    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def load_all(self, sources: list[ModelSource]) -> None:
        """Load every model; a model that fails is logged and skipped, the others keep serving."""
        try:
            for source in sources:
                entry = self._entries.setdefault(source.id, ModelEntry(source))
                self._load(entry)
        finally:
            self._done.set()

    def _load(self, entry: ModelEntry) -> None:
        started = time.perf_counter()
        try:
            entry.worker = self._factory(entry.source)
        except EngineError as exc:
            entry.state, entry.error = LoadState.FAILED, exc.message
            log.error("model %s refused at load: %s", entry.source.id, exc.message)
        except Exception:  # one model failing must not stop the others from loading
            entry.state, entry.error = LoadState.FAILED, "internal error while loading"
            log.exception("model %s failed to load", entry.source.id)
        else:
            entry.state = LoadState.LOADED
        entry.load_seconds = time.perf_counter() - started
        if entry.state is LoadState.LOADED:
            log.info("model %s loaded in %.2f s", entry.source.id, entry.load_seconds)
        if self.on_load is not None:
            self.on_load(entry.source.id, entry.source.version, entry.state is LoadState.LOADED, entry.load_seconds)

    def get(self, model_id: str) -> Worker:
        """The worker of a loaded model; raises ModelNotFoundError or ModelNotReadyError."""
        entry = self._entries.get(model_id)
        if entry is None and not self._done.is_set():
            raise ModelNotReadyError("models are still loading", retry_after_s=5)
        if entry is None or entry.state is LoadState.FAILED:
            raise ModelNotFoundError(f"the model {model_id!r} does not exist", param="model")
        if entry.worker is None:
            raise ModelNotReadyError(f"the model {model_id!r} is still loading", retry_after_s=5)
        return entry.worker

    def close(self) -> None:
        for entry in self._entries.values():
            if entry.worker is not None:
                entry.worker.close()
