"""Composition root: build the services from a Runtime and wire them into the FastAPI app."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from llama_cpp import __version__ as llama_cpp_version
from prometheus_client import start_http_server
from starlette.routing import Route

from moltbot import __version__
from moltbot.documents.runner import WorkerLimits as DocumentWorkerLimits
from moltbot.engine.backend import Worker
from moltbot.engine.batching_worker import BatchingWorker
from moltbot.engine.bert_backend import BertEmbedder
from moltbot.engine.errors import ModelLoadError
from moltbot.engine.kv_disk import DiskKVCache
from moltbot.engine.llama_model import LlamaModelFile
from moltbot.engine.runner import RunnerOptions
from moltbot.engine.worker import ModelWorker, WorkerLimits
from moltbot.gateway.auth import AuthMiddleware, check_declared
from moltbot.gateway.clients import parse_networks
from moltbot.gateway.deps import Gateway
from moltbot.gateway.deps import install as install_gateway
from moltbot.gateway.errors import install_error_handlers
from moltbot.gateway.leases import ModelLeaseMiddleware
from moltbot.gateway.limits import RequestLimitsMiddleware
from moltbot.gateway.observe import ObserveMiddleware
from moltbot.gateway.openapi import install_openapi
from moltbot.gateway.ratelimit import Limits, RateLimiter
from moltbot.gateway.routes import (
    admin,
    anthropic,
    audio,
    chat,
    completions,
    documents,
    embeddings,
    graph,
    health,
    metrics,
    model_admin,
    models,
    ollama,
    pipelines,
    realtime,
    responses,
    sessions,
    ui,
)
from moltbot.gateway.serving import OpenAIServing
from moltbot.models.bundled import BY_ID as BUNDLED
from moltbot.models.bundled import MINILM, install_bundled
from moltbot.models.manager import ModelManager, WorkerFactory
from moltbot.models.package import ModelKeys, decrypt_version, sweep_decrypted, wipe
from moltbot.models.store import ModelFormat, ModelSource, ModelStore, external_source
from moltbot.monitor.metrics import AlertCollector, Metrics
from moltbot.monitor.notify import LogNotifier, Notifier, WebhookNotifier
from moltbot.monitor.rules import load_rules
from moltbot.monitor.sampler import ResourceSampler
from moltbot.monitor.service import Monitor
from moltbot.services.ask import AskService
from moltbot.services.documents import DocumentLimits, DocumentService
from moltbot.services.generation import GenerationService
from moltbot.services.graph import GraphService
from moltbot.services.pipelines import PipelineService
from moltbot.services.responses import ResponseService
from moltbot.services.sessions import SessionService
from moltbot.services.speech import SpeechLimits, SpeechService
from moltbot.services.summaries import Summarizer
from moltbot.settings import Runtime
from moltbot.storage.audit import AuditLog
from moltbot.storage.crypto import Vault
from moltbot.storage.database import open_database
from moltbot.storage.documents import DocumentRepository
from moltbot.storage.graph import GraphRepository
from moltbot.storage.keys import KeyStore, Scope
from moltbot.storage.responses import ResponseRepository
from moltbot.storage.sessions import SessionRepository

log = logging.getLogger(__name__)
AUTH_CACHE_TTL_S = 1.0


@dataclass(slots=True)
class Services:
    runtime: Runtime
    keys: KeyStore
    audit: AuditLog
    vault: Vault
    sessions: SessionRepository
    models: ModelManager
    store: ModelStore
    metrics: Metrics
    monitor: Monitor | None
    responses: ResponseRepository
    documents: DocumentRepository
    graph: GraphRepository


class VaultSealer:
    """KV-state files sealed with the vault's AES-256-GCM, each bound to its file name."""

    def __init__(self, vault: Vault) -> None:
        self._vault = vault

    def seal(self, data: bytes, name: str) -> bytes:
        return self._vault.encrypt(data, "kv_states", "file", name)

    def open(self, blob: bytes, name: str) -> bytes:
        return self._vault.decrypt(blob, "kv_states", "file", name)


def worker_factory(
    runtime: Runtime, vault: Vault | None = None, store: ModelStore | None = None, keys: ModelKeys | None = None
) -> WorkerFactory:
    settings = runtime.settings
    limits = WorkerLimits(runtime.max_queue, settings.queue_timeout_s, settings.request_timeout_s)
    exact = settings.exact_cache
    options = RunnerOptions(
        runtime.parallel, runtime.context_size, runtime.batch_size, runtime.threads, runtime.kv_cache_bytes, exact
    )

    def build(source: ModelSource) -> Worker:
        if source.key_id is None:
            return build_plain(source)
        if store is None or keys is None:
            raise ModelLoadError("encrypted models need the model store and its key store")
        # Decrypted into a 0600 file on tmpfs for as long as the load takes, then removed.
        folder = decrypt_version(store, store.version(source.id, int(source.version)), keys.get(source.key_id))
        try:
            path = folder / source.path.name if source.format is ModelFormat.GGUF else folder
            return build_plain(dataclasses.replace(source, path=path))
        finally:
            wipe(folder)

    def build_plain(source: ModelSource) -> Worker:
        if source.format is ModelFormat.GGUF:
            model = LlamaModelFile(source.id, source.path, runtime.context_size, runtime.gpu_layers, repacked=not exact)
            disk = None
            if vault is not None and runtime.kv_disk_bytes > 0 and runtime.kv_cache_bytes > 0:
                size = source.path.stat().st_size
                # States kept in exact mode hold prompt pieces only: the two modes do not share files.
                mode = "exact" if exact else "fast"
                tag = f"{source.id}:{source.version}:{size}:{llama_cpp_version}:{runtime.context_size}:{mode}"
                disk = DiskKVCache(settings.kv_dir / source.id, runtime.kv_disk_bytes, tag, VaultSealer(vault))
            try:
                return BatchingWorker(model, options, limits, disk)
            except Exception:
                model.close()
                raise
        if source.format is ModelFormat.HF_BERT:
            return ModelWorker(BertEmbedder(source.id, source.path, runtime.profile.embedding_batch), limits)
        if source.format is ModelFormat.HF_CAUSAL:
            from moltbot.engine.hf_backend import HFCausalBackend

            return ModelWorker(HFCausalBackend(source.id, source.path, runtime.context_size, runtime.threads), limits)
        raise ModelLoadError(f"unsupported model format {source.format}")

    return build


def build_services(runtime: Runtime) -> Services:
    """Everything the server runs; raises RulesError for an alert rules file that cannot be used and
    CryptoError for a key-encryption key that cannot be."""
    settings = runtime.settings
    rules = load_rules(settings.alert_rules) if settings.monitor else []
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    database = open_database(settings.database_path, settings.database_url)
    keys = KeyStore(database, cache_ttl_s=AUTH_CACHE_TTL_S)
    vault = Vault(database, settings.kek_path)
    store = ModelStore(settings.models_dir, settings.model_versions_kept)
    model_keys = ModelKeys(settings.model_keys_dir, vault)
    models = ModelManager(
        worker_factory(runtime, vault, store, model_keys), store=store, drain_timeout_s=settings.request_timeout_s + 5
    )
    sampler = ResourceSampler(settings.data_dir)
    metrics = Metrics(models, sampler)
    models.on_load = metrics.model_loaded
    monitor = None
    if settings.monitor:
        notifiers: list[Notifier] = [LogNotifier()]
        if settings.alert_webhooks:
            notifiers.append(WebhookNotifier(settings.alert_webhooks, outcome=metrics.notification))
        labels = {"job": "moltbot", "instance": f"{settings.host}:{settings.port}"}
        monitor = Monitor(
            metrics,
            sampler,
            models,
            rules,
            notifiers=notifiers,
            interval_s=settings.monitor_interval_s,
            base_labels=labels,
        )
        metrics.add_collector(AlertCollector(monitor.active))
    session_store = SessionRepository(database, vault)
    responses = ResponseRepository(database, vault)
    documents = DocumentRepository(database, vault)
    graph = GraphRepository(database, vault)
    return Services(
        runtime,
        keys,
        AuditLog(database),
        vault,
        session_store,
        models,
        store,
        metrics,
        monitor,
        responses,
        documents,
        graph,
    )


def ensure_admin_key(services: Services) -> str | None:
    """On first start, create an admin key; the caller prints the token once."""
    if services.keys.has_active_admin():
        return None
    key, token = services.keys.create("admin", frozenset({Scope.ADMIN}))
    services.audit.record("server", "key.create", key.id, name=key.name, scopes=[Scope.ADMIN.value])
    return token


def load_models(services: Services) -> None:
    settings = services.runtime.settings
    try:
        if settings.bundled_models:
            install_bundled(services.store)
    except Exception:
        log.exception("could not place the bundled models in the model store")
    if swept := sweep_decrypted(services.store.tmp):
        log.warning("removed %d decrypted model folders left by an earlier process", swept)
    runtime = services.runtime
    installed = services.store.active_sources()
    sources = [s for s in installed if runtime.wanted(s.id, bundled=s.id in BUNDLED)]
    if idle := sorted(s.id for s in installed if s not in sources):
        log.info("installed and not loaded (MOLTBOT_MODELS names what loads): %s", ", ".join(idle))
    if missing := [m for m in settings.models or () if m not in {s.id for s in installed}]:
        log.error("MOLTBOT_MODELS names models that are not in the store: %s", ", ".join(missing))
    if settings.model_path is not None and (extra := external_source(settings.model_path)) is not None:
        sources = [s for s in sources if s.id != extra.id] + [extra]
    services.models.load_all(sources)


async def _refresh_keys(keys: KeyStore) -> None:
    """Keep cached keys fresh in the background: a revoked key stops working within the cache TTL,
    and no request waits for the database."""
    while True:
        await asyncio.sleep(AUTH_CACHE_TTL_S / 2)
        try:
            await asyncio.to_thread(keys.refresh)
        except Exception:
            log.exception("refreshing API keys failed")


def _report_cut_requests(services: Services) -> None:
    """At shutdown, after the drain window: say how many generations it did not let finish."""
    cut = sum(e.worker.queue_depth for e in services.models.entries() if e.worker is not None)
    if cut:
        log.warning(
            "shutdown: the drain window of %.0f s (MOLTBOT_SHUTDOWN_DRAIN_S) ended with %d generations still "
            "running; they are cut",
            services.runtime.settings.drain_seconds,
            cut,
        )


def create_app(services: Services) -> FastAPI:
    settings = services.runtime.settings
    generation = GenerationService(services.models, services.runtime.settings, services.runtime.default_model)
    pipeline_service = PipelineService(concurrency=services.runtime.threads)
    summarizer = None
    if settings.document_summaries:
        summarizer = Summarizer(generation, services.runtime.summary_model)
    document_limits = DocumentLimits(
        max_bytes=settings.document_max_bytes,
        max_pages=settings.document_max_pages,
        languages=settings.ocr_languages,
        dpi=settings.ocr_dpi,
        worker=DocumentWorkerLimits(
            memory_bytes=settings.document_worker_memory_bytes, page_timeout_s=settings.document_page_timeout_s
        ),
    )
    graph_service = GraphService(services.graph)
    speech_service = SpeechService(
        SpeechLimits(
            max_bytes=settings.audio_max_bytes,
            max_seconds=settings.audio_max_seconds,
            max_input_chars=settings.speech_max_input_chars,
            threads=services.runtime.threads,
        ),
        cache=settings.data_dir / "speech",
        default_model=settings.speech_model,
    )
    asker = AskService(
        generation,
        services.documents,
        services.graph,
        settings.document_embedding_model or MINILM,
        settings.document_model or services.runtime.default_model,
    )
    document_service = DocumentService(
        services.documents, pipeline_service, document_limits, summarizer=summarizer, graph=graph_service, asker=asker
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(target=load_models, args=(services,), name="model-loader", daemon=True)
        loader.start()
        await document_service.start()
        refresher = asyncio.create_task(_refresh_keys(services.keys))
        if services.monitor is not None:
            services.monitor.start()
        metrics_server = None
        if services.runtime.settings.metrics_port is not None:
            metrics_server, _thread = start_http_server(
                services.runtime.settings.metrics_port, addr="127.0.0.1", registry=services.metrics.registry
            )
        yield
        _report_cut_requests(services)
        await document_service.stop()
        refresher.cancel()
        if metrics_server is not None:
            metrics_server.shutdown()
        if services.monitor is not None:
            services.monitor.close()
        services.models.close()

    app = FastAPI(title="Moltbot", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan)
    gateway = Gateway(
        settings=services.runtime.settings,
        generation=generation,
        sessions=SessionService(services.sessions, generation),
        responses=ResponseService(services.responses),
        openai=OpenAIServing(generation),
        models=services.models,
        keys=services.keys,
        audit=services.audit,
        registry=services.metrics.registry,
        monitor=services.monitor,
        pipelines=pipeline_service,
        documents=document_service,
        graph=graph_service,
        speech=speech_service,
        voice_model=services.runtime.voice_model,
    )
    install_gateway(app, gateway)
    install_error_handlers(app)
    install_openapi(app)
    modules = (
        health,
        models,
        chat,
        completions,
        embeddings,
        metrics,
        admin,
        model_admin,
        sessions,
        ollama,
        anthropic,
        responses,
        pipelines,
        documents,
        graph,
        audio,
        realtime,
        ui,
    )
    for module in modules:
        app.include_router(module.router)
    # FastAPI keeps included routers as opaque entries: match against the routers' own routes.
    own = [r for r in app.router.routes if isinstance(r, Route)]
    routes = own + [r for m in modules for r in m.router.routes if isinstance(r, Route)]
    check_declared(routes)
    app.state.routes = routes
    settings = services.runtime.settings
    limits = Limits(
        settings.rate_limit_rpm,
        settings.rate_limit_tpm,
        settings.rate_limit_concurrent,
        settings.auth_failures_per_minute,
    )
    app.add_middleware(ModelLeaseMiddleware, models=services.models)
    app.add_middleware(AuthMiddleware, keys=services.keys, routes=routes, limiter=RateLimiter(limits))
    app.add_middleware(
        RequestLimitsMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        max_json_depth=settings.max_json_depth,
        uploads={  # the file and its form fields
            "/v1/documents": settings.document_max_bytes + 64 * 1024,
            "/v1/audio/transcriptions": settings.audio_max_bytes + 64 * 1024,
            "/v1/audio/translations": settings.audio_max_bytes + 64 * 1024,
        },
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["authorization", "content-type", "x-request-id"],
            expose_headers=["x-request-id", "retry-after"],
        )
    observed = services.metrics if settings.monitor else None
    app.add_middleware(
        ObserveMiddleware,
        routes=routes,
        metrics=observed,
        access=settings.access_log,
        tls=settings.tls,
        trusted_proxies=parse_networks(settings.trusted_proxies),
    )
    return app
