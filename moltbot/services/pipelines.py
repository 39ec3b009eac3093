"""PipelineService: the preprocessing pipelines (moltbot/pipelines) for the API and the document jobs.

A pipeline is named (a shipped preset), given as a definition object, or as YAML/JSON text. Runs are
CPU work: they go to a worker thread, at most `concurrency` at a time, so the event loop keeps serving.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from moltbot.errors import InvalidRequestError
from moltbot.pipelines import (
    PRESETS,
    DefinitionError,
    Document,
    Pipeline,
    StepRegistry,
    StepReport,
    default_registry,
    parse_definition_text,
)

MAX_PAGES = 2000


@dataclass(slots=True, frozen=True)
class PipelineRun:
    pipeline: Pipeline
    document: Document
    reports: list[StepReport]
    seconds: float


class PipelineService:
    def __init__(self, registry: StepRegistry | None = None, concurrency: int = 2) -> None:
        self.registry = registry or default_registry()
        self._limiter = anyio.CapacityLimiter(max(1, concurrency))

    def presets(self) -> list[dict[str, Any]]:
        return [dict(PRESETS[name]) for name in sorted(PRESETS)]

    def resolve(self, pipeline: Mapping[str, Any] | str | None, pipeline_yaml: str | None) -> Pipeline:
        """The pipeline a request names: a preset's name, a definition object or definition text."""
        if (pipeline is None) == (pipeline_yaml is None):
            raise InvalidRequestError("give exactly one of `pipeline` (a name or a definition) and `pipeline_yaml`")
        if isinstance(pipeline, str):
            if pipeline not in PRESETS:
                raise DefinitionError(
                    f"unknown pipeline {pipeline!r}; shipped: {', '.join(sorted(PRESETS))}", "pipeline"
                )
            return self.registry.build(PRESETS[pipeline])
        raw = pipeline if pipeline is not None else parse_definition_text(pipeline_yaml or "")
        return self.registry.build(raw)

    async def run(self, pipeline: Pipeline, text: str | None, pages: list[str] | None) -> PipelineRun:
        if (text is None) == (pages is None):
            raise InvalidRequestError("give exactly one of `text` and `pages`")
        if pages is not None and not 0 < len(pages) <= MAX_PAGES:
            raise InvalidRequestError(f"`pages` holds 1 to {MAX_PAGES} pages", "pages")
        document = Document.from_text(text) if text is not None else Document.from_pages(pages or [])
        return await anyio.to_thread.run_sync(self._run, pipeline, document, limiter=self._limiter)

    @staticmethod
    def _run(pipeline: Pipeline, document: Document) -> PipelineRun:
        began = time.perf_counter()
        document, reports = pipeline.run(document)
        return PipelineRun(pipeline, document, reports, time.perf_counter() - began)
