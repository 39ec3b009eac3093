"""Loads the models' active versions, hands out their workers, and swaps versions blue-green.

A deploy loads the new version beside the serving one, runs a smoke generation, then switches new
requests to it in one assignment (the event loop's); requests already admitted by the old version
finish on it, and it is closed once it has none left. A version that fails to load or its smoke test
never serves; the old one stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

import psutil

from moltbot import __version__
from moltbot.engine.backend import Worker
from moltbot.engine.errors import ModelNotReadyError
from moltbot.engine.types import ModelKind, Prompt, SamplingParams
from moltbot.errors import MoltbotError
from moltbot.models.store import ModelFormat, ModelSource, ModelStore, UnknownModelError
from moltbot.resources import cgroup_memory_limit

log = logging.getLogger(__name__)

WorkerFactory = Callable[[ModelSource], Worker]
# Told of every load attempt: model id, version, whether it succeeded, seconds it took.
LoadObserver = Callable[[str, str, bool, float], None]
SMOKE_TIMEOUT_S = 60.0
DRAIN_POLL_S = 0.05


class LoadState(enum.StrEnum):
    PENDING = "pending"
    LOADED = "loaded"
    FAILED = "failed"
    DRAINING = "draining"


class ModelNotFoundError(UnknownModelError):
    """No model of that id is known."""


class DeployError(MoltbotError):
    """The new version did not load or failed its smoke test; the old one keeps serving."""


class DeployConflictError(MoltbotError):
    """A deploy of this model is already under way, or there is nothing to roll back to."""


class InsufficientMemoryError(MoltbotError):
    """Loading a version beside the serving one would not fit in memory."""


@dataclass(slots=True)
class ModelEntry:
    source: ModelSource
    state: LoadState = LoadState.PENDING
    worker: Worker | None = None
    error: str = ""
    load_seconds: float = 0.0
    leases: int = 0  # requests holding this version's worker (see `requests_scope`)
    pin: Any = None  # the store's pin on this version while it is loaded


# The entries a request has looked up, released when the request ends (set by `requests_scope`).
_LEASES: contextvars.ContextVar[list[ModelEntry] | None] = contextvars.ContextVar("model_leases", default=None)


@dataclass(slots=True, frozen=True)
class DeployResult:
    model: str
    previous: str | None
    version: str
    load_seconds: float
    smoke_seconds: float
    seconds: float  # from the request to the switch
    unchanged: bool = False


def engine_build() -> str:
    """Moltbot's version and the llama.cpp binding's: part of every reply's system_fingerprint."""
    try:
        binding = package_version("llama-cpp-python")
    except PackageNotFoundError:
        binding = "none"
    return f"moltbot-{__version__}+llama-cpp-python-{binding}"


def system_fingerprint(source: ModelSource | None) -> str:
    """`fp_` and a short hash of the model version (its digest) and the engine build: it changes when
    either does, as OpenAI's does when their serving configuration changes."""
    what = "unknown" if source is None else f"{source.id}:{source.version}:{source.digest}"
    return "fp_" + hashlib.sha256(f"{what}|{engine_build()}".encode()).hexdigest()[:12]


def available_memory() -> int:
    """Bytes a new model may use: the host's available memory, or what the cgroup limit leaves."""
    available = int(psutil.virtual_memory().available)
    limit = cgroup_memory_limit()
    if limit is not None:
        used = psutil.Process().memory_info().rss
        available = min(available, max(0, limit - used))
    return available


def memory_needed(source: ModelSource) -> int:
    """A rough need: the weights plus a quarter for contexts and buffers (transformers on the CPU
    widens 16-bit checkpoints to float32: twice that)."""
    factor = 2.5 if source.format is ModelFormat.HF_CAUSAL else 1.25
    return int(source.size_bytes * factor) + (64 << 20)


@dataclass(slots=True)
class _Retiring:
    entry: ModelEntry
    since: float = field(default_factory=time.monotonic)


class ModelManager:
    """Every known model, the version it serves, its load state, and its worker once loaded."""

    def __init__(
        self,
        factory: WorkerFactory,
        on_load: LoadObserver | None = None,
        store: ModelStore | None = None,
        *,
        memory: Callable[[], int] = available_memory,
        drain_timeout_s: float = 600.0,
    ) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self._retiring: list[_Retiring] = []
        self._factory = factory
        self.on_load = on_load
        self.store = store
        self._memory = memory
        self._drain_timeout_s = drain_timeout_s
        self._deploying: set[str] = set()
        self._done = threading.Event()
        self._lock = threading.Lock()

    @property
    def is_ready(self) -> bool:
        """All loads attempted and at least one model serving."""
        return self._done.is_set() and any(e.state is LoadState.LOADED for e in self._entries.values())

    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def entry(self, name: str) -> ModelEntry | None:
        return self._entries.get(name)

    def draining(self, name: str) -> list[ModelEntry]:
        with self._lock:
            return [r.entry for r in self._retiring if r.entry.source.id == name]

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
        except MoltbotError as exc:
            entry.state, entry.error = LoadState.FAILED, exc.message
            log.error("model %s version %s refused at load: %s", entry.source.id, entry.source.version, exc.message)
        except Exception:  # one model failing must not stop the others from loading
            entry.state, entry.error = LoadState.FAILED, "internal error while loading"
            log.exception("model %s version %s failed to load", entry.source.id, entry.source.version)
        else:
            entry.state = LoadState.LOADED
            if self.store is not None and entry.source.digest:
                try:
                    entry.pin = self.store.pin(entry.source.id, int(entry.source.version))
                except (OSError, ValueError, MoltbotError):
                    log.warning("model %s version %s could not be pinned", entry.source.id, entry.source.version)
        entry.load_seconds = time.perf_counter() - started
        if entry.state is LoadState.LOADED:
            log.info("model %s version %s loaded in %.2f s", entry.source.id, entry.source.version, entry.load_seconds)
        if self.on_load is not None:
            self.on_load(entry.source.id, entry.source.version, entry.state is LoadState.LOADED, entry.load_seconds)

    def fingerprint(self, worker: Worker) -> str:
        """The system fingerprint of the version `worker` serves (a draining one included)."""
        with self._lock:
            candidates = [*self._entries.values(), *(r.entry for r in self._retiring)]
        for entry in candidates:
            if entry.worker is worker:
                return system_fingerprint(entry.source)
        return system_fingerprint(None)

    def get(self, model_id: str) -> Worker:
        """The worker of a loaded model; raises ModelNotFoundError or ModelNotReadyError. Inside
        `requests_scope` the version stays loaded until the request ends, even if a deploy switches
        to another version meanwhile."""
        entry = self._entries.get(model_id)
        if entry is None and not self._done.is_set():
            raise ModelNotReadyError("models are still loading", retry_after_s=5)
        if entry is None or entry.state is LoadState.FAILED:
            raise ModelNotFoundError(f"the model {model_id!r} does not exist", param="model")
        worker = entry.worker
        if worker is None:
            raise ModelNotReadyError(f"the model {model_id!r} is still loading", retry_after_s=5)
        held = _LEASES.get()
        if held is not None:
            with self._lock:
                entry.leases += 1
            held.append(entry)
        return worker

    @contextlib.contextmanager
    def requests_scope(self) -> Any:
        """Around one request: the versions it looks up are released when it ends."""
        held: list[ModelEntry] = []
        token = _LEASES.set(held)
        try:
            yield
        finally:
            _LEASES.reset(token)
            with self._lock:
                for entry in held:
                    entry.leases -= 1

    # -- blue-green ------------------------------------------------------------------------------

    async def deploy(self, name: str, number: int | None, *, in_place: bool = False) -> DeployResult:
        """Serve version `number` of `name` (the store's active version when None)."""
        if self.store is None:
            raise DeployConflictError("this server has no model store")
        if name in self._deploying:
            raise DeployConflictError(f"a deploy of {name!r} is already under way")
        self._deploying.add(name)
        try:
            return await self._deploy(self.store, name, number, in_place)
        finally:
            self._deploying.discard(name)

    async def rollback(self, name: str) -> DeployResult:
        """Serve the version that was active before the current one."""
        if self.store is None:
            raise DeployConflictError("this server has no model store")
        self.store.version(name)  # 404 for an unknown model
        previous = await asyncio.to_thread(self.store.previous, name)
        if previous is None:
            raise DeployConflictError(f"the model {name!r} has no earlier version in the store to roll back to")
        return await self.deploy(name, previous)

    async def _deploy(self, store: ModelStore, name: str, number: int | None, in_place: bool) -> DeployResult:
        started = time.perf_counter()
        source = await asyncio.to_thread(store.source, name, number)
        current = self._entries.get(name)
        serving = current if current is not None and current.worker is not None else None
        previous = serving.source.version if serving is not None else None
        if serving is not None and serving.source.version == source.version and serving.source.digest == source.digest:
            return DeployResult(name, previous, source.version, 0.0, 0.0, 0.0, unchanged=True)
        if serving is not None and not in_place:
            need, have = memory_needed(source), self._memory()
            if need > have:
                raise InsufficientMemoryError(
                    f"version {source.version} of {name!r} needs about {need >> 20} MiB beside the serving "
                    f"version and {have >> 20} MiB are available; deploy in place to unload the serving "
                    "version first (requests get 503 while it loads)"
                )
        placeholder = ModelEntry(source)
        if serving is not None and in_place:
            self._entries[name] = placeholder  # requests get 503 "still loading" meanwhile
        entry = ModelEntry(source)
        switched_in = False
        try:
            if serving is not None and in_place:
                await asyncio.to_thread(self._drain_and_close, serving)
            await asyncio.to_thread(self._load, entry)
            smoke_started = time.perf_counter()
            failure = entry.error if entry.worker is None else await self._smoke(entry)
            if not failure:
                try:  # the store names what serves before the switch: a restart serves the same
                    await asyncio.to_thread(store.set_active, name, int(source.version))
                except (MoltbotError, OSError) as exc:
                    failure = f"the store could not record it ({getattr(exc, 'message', type(exc).__name__)})"
            if failure:
                entry.state, entry.error = LoadState.FAILED, failure
                kept = await self._after_failure(name, serving if in_place else None, entry)
                raise DeployError(f"version {source.version} of {name!r} was not deployed: {failure}{kept}")
            smoke_seconds = time.perf_counter() - smoke_started
            self._entries[name] = entry  # the switch: new requests go to the new version from here
            switched_in = True
        finally:
            if not switched_in:
                await asyncio.to_thread(self._unload, entry)
                if self._entries.get(name) is placeholder:  # interrupted (cancelled) mid-way
                    self._entries[name] = ModelEntry(source, LoadState.FAILED, error="the deploy was interrupted")
        switched = time.perf_counter() - started
        log.info("model %s: switched from version %s to %s in %.2f s", name, previous, source.version, switched)
        if serving is not None and not in_place:
            self._retire(serving)
        protect = frozenset({int(source.version)} | ({int(previous)} if previous and previous.isdigit() else set()))
        try:
            await asyncio.to_thread(store.prune, name, protect)
        except (MoltbotError, OSError):
            log.exception("model %s: pruning old versions failed", name)
        return DeployResult(name, previous, source.version, entry.load_seconds, smoke_seconds, switched)

    async def _after_failure(self, name: str, unloaded: ModelEntry | None, failed: ModelEntry) -> str:
        """After a failed deploy: reload a version unloaded for an in-place deploy; what now serves."""
        current = self._entries.get(name)
        if unloaded is not None:
            restored = ModelEntry(unloaded.source)
            await asyncio.to_thread(self._load, restored)
            self._entries[name] = restored
            if restored.state is LoadState.LOADED:
                return f"; version {restored.source.version} serves again"
            return f"; version {restored.source.version} could not be reloaded either: {restored.error}"
        if current is None or current.worker is None:
            self._entries[name] = failed  # nothing served before: the model shows as failed
            return ""
        return f"; still serving version {current.source.version}"

    async def _smoke(self, entry: ModelEntry) -> str:
        """An empty string when the new worker answers a tiny request sensibly, else what went wrong."""
        worker = entry.worker
        assert worker is not None  # noqa: S101 - loaded
        try:
            if worker.info.kind is ModelKind.EMBED:
                embedded = await asyncio.wait_for(worker.embed(["smoke test"]), SMOKE_TIMEOUT_S)
                vector = embedded.vectors[0] if embedded.vectors else []
                if not vector or not all(math.isfinite(x) for x in vector):
                    return "its smoke test embedding is empty or not finite"
                return ""
            tokens = tuple(worker.backend.tokenize("Hello"))
            params = SamplingParams(max_tokens=2, temperature=0.0)
            done = await asyncio.wait_for(worker.generate(Prompt(tokens), params), SMOKE_TIMEOUT_S)
            if done.completion_tokens < 1:
                return "its smoke test generated nothing"
        except TimeoutError:
            return f"its smoke test took longer than {SMOKE_TIMEOUT_S:.0f} s"
        except MoltbotError as exc:
            return f"its smoke test failed: {exc.message}"
        except Exception:
            log.exception("smoke test of %s version %s", entry.source.id, entry.source.version)
            return "its smoke test failed with an internal error"
        return ""

    async def unload(self, name: str) -> bool:
        """Stop serving `name`: new requests get 404, requests under way finish (up to the drain timeout),
        then its version is closed and unpinned. False if it was not loaded."""
        with self._lock:
            entry = self._entries.pop(name, None)
        if entry is None:
            return False
        entry.state = LoadState.DRAINING
        await asyncio.to_thread(self._drain_and_close, entry)
        return True

    def _retire(self, entry: ModelEntry) -> None:
        entry.state = LoadState.DRAINING
        with self._lock:
            self._retiring.append(_Retiring(entry))
        threading.Thread(target=self._drain_and_close, args=(entry,), name="model-drain", daemon=True).start()

    def _drain_and_close(self, entry: ModelEntry) -> None:
        """Wait until no request holds the old version (looked up, admitted or streaming), then close it."""
        worker = entry.worker
        deadline = time.monotonic() + self._drain_timeout_s
        while worker is not None and (entry.leases > 0 or worker.queue_depth > 0) and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)
        if worker is not None:
            log.info("model %s version %s unloaded", entry.source.id, entry.source.version)
        self._unload(entry)
        with self._lock:
            self._retiring = [r for r in self._retiring if r.entry is not entry]

    @staticmethod
    def _unload(entry: ModelEntry) -> None:
        worker, entry.worker = entry.worker, None
        if worker is not None:
            worker.close()
        if entry.pin is not None:
            entry.pin.release()
            entry.pin = None

    def close(self) -> None:
        for entry in self._entries.values():
            self._unload(entry)
        with self._lock:
            retiring, self._retiring = self._retiring, []
        for item in retiring:
            self._unload(item.entry)
