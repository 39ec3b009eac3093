"""Typed access to the services from routes (FastAPI dependencies), instead of untyped app state.

The composition root (app.py) builds one `Gateway` and hands it to `install`; routes name what they need
(`serving: Serving`, `sessions: Sessions`, ...), never `request.app.state`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, FastAPI, Request
from prometheus_client import CollectorRegistry
from starlette.requests import HTTPConnection

from moltbot.gateway.serving import OpenAIServing
from moltbot.models.manager import ModelManager
from moltbot.monitor.service import Monitor
from moltbot.services.documents import DocumentService
from moltbot.services.generation import GenerationService
from moltbot.services.graph import GraphService
from moltbot.services.pipelines import PipelineService
from moltbot.services.responses import ResponseService
from moltbot.services.sessions import SessionService
from moltbot.services.speech import SpeechService
from moltbot.settings import Settings
from moltbot.storage.audit import AuditLog
from moltbot.storage.keys import KeyStore


@dataclass(slots=True, frozen=True)
class Gateway:
    """What the routes reach: the services, and the stores admin routes manage."""

    settings: Settings
    generation: GenerationService
    sessions: SessionService
    responses: ResponseService
    openai: OpenAIServing
    models: ModelManager
    keys: KeyStore
    audit: AuditLog
    registry: CollectorRegistry
    monitor: Monitor | None
    pipelines: PipelineService
    documents: DocumentService
    graph: GraphService
    speech: SpeechService
    voice_model: str  # the instruct model that answers a live voice conversation


def install(app: FastAPI, gateway: Gateway) -> None:
    app.state.gateway = gateway


def _gateway(request: Request) -> Gateway:
    return cast(Gateway, request.app.state.gateway)


def gateway_of(connection: HTTPConnection) -> Gateway:
    """The gateway of a WebSocket route (dependencies are for HTTP routes)."""
    return cast(Gateway, connection.app.state.gateway)


def _serving(request: Request) -> OpenAIServing:
    return _gateway(request).openai


def _generation(request: Request) -> GenerationService:
    return _gateway(request).generation


def _sessions(request: Request) -> SessionService:
    return _gateway(request).sessions


def _responses(request: Request) -> ResponseService:
    return _gateway(request).responses


def _settings(request: Request) -> Settings:
    return _gateway(request).settings


def _models(request: Request) -> ModelManager:
    return _gateway(request).models


def _keys(request: Request) -> KeyStore:
    return _gateway(request).keys


def _audit(request: Request) -> AuditLog:
    return _gateway(request).audit


def _registry(request: Request) -> CollectorRegistry:
    return _gateway(request).registry


def _monitor(request: Request) -> Monitor | None:
    return _gateway(request).monitor


def _pipelines(request: Request) -> PipelineService:
    return _gateway(request).pipelines


def _documents(request: Request) -> DocumentService:
    return _gateway(request).documents


def _graph(request: Request) -> GraphService:
    return _gateway(request).graph


def _speech(request: Request) -> SpeechService:
    return _gateway(request).speech


Serving = Annotated[OpenAIServing, Depends(_serving)]
Generation = Annotated[GenerationService, Depends(_generation)]
Sessions = Annotated[SessionService, Depends(_sessions)]
Responses = Annotated[ResponseService, Depends(_responses)]
CurrentSettings = Annotated[Settings, Depends(_settings)]
Models = Annotated[ModelManager, Depends(_models)]
Keys = Annotated[KeyStore, Depends(_keys)]
Audit = Annotated[AuditLog, Depends(_audit)]
Registry = Annotated[CollectorRegistry, Depends(_registry)]
MonitorDep = Annotated[Monitor | None, Depends(_monitor)]
Pipelines = Annotated[PipelineService, Depends(_pipelines)]
Documents = Annotated[DocumentService, Depends(_documents)]
Graph = Annotated[GraphService, Depends(_graph)]
Speech = Annotated[SpeechService, Depends(_speech)]
