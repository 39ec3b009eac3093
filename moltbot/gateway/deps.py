"""Typed access to the services from routes (FastAPI dependencies), instead of untyped app state."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from moltbot.gateway.serving import OpenAIServing
from moltbot.settings import Settings
from moltbot.storage.sessions import SessionRepository


def _serving(request: Request) -> OpenAIServing:
    return cast(OpenAIServing, request.app.state.serving)


def _sessions(request: Request) -> SessionRepository:
    return cast(SessionRepository, request.app.state.sessions)


def _settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


Serving = Annotated[OpenAIServing, Depends(_serving)]
Sessions = Annotated[SessionRepository, Depends(_sessions)]
CurrentSettings = Annotated[Settings, Depends(_settings)]
