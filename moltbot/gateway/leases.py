"""Holds the model versions a request uses until its response is complete, so a blue-green deploy
never unloads a version under a request that looked it up (even one still streaming)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from moltbot.models.manager import ModelManager


class ModelLeaseMiddleware:
    def __init__(self, app: ASGIApp, models: ModelManager) -> None:
        self.app = app
        self._models = models

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self._models.requests_scope():
            await self.app(scope, receive, send)
