"""Preprocessing pipelines: typed, pluggable cleaning and chunking steps over a document's text.

Usable on its own: `default_registry().build(definition).run(Document.from_text(text))`.
"""

from __future__ import annotations

import functools

from moltbot.pipelines.core import (
    ENTRY_POINT_GROUP,
    Chunk,
    DefinitionError,
    Document,
    Pipeline,
    PipelineError,
    Segment,
    Step,
    StepOptions,
    StepRegistry,
    StepReport,
    parse_definition_text,
)
from moltbot.pipelines.steps import BUILTIN_STEPS, PRESETS

__all__ = [
    "BUILTIN_STEPS",
    "ENTRY_POINT_GROUP",
    "PRESETS",
    "Chunk",
    "DefinitionError",
    "Document",
    "Pipeline",
    "PipelineError",
    "Segment",
    "Step",
    "StepOptions",
    "StepRegistry",
    "StepReport",
    "default_registry",
    "parse_definition_text",
    "preset",
]


@functools.lru_cache(maxsize=1)
def default_registry() -> StepRegistry:
    """The built-in steps and the installed plugins (entry points are read once per process)."""
    return StepRegistry(BUILTIN_STEPS)


def preset(name: str) -> Pipeline:
    """A shipped pipeline by name; raises DefinitionError for an unknown one."""
    if name not in PRESETS:
        raise DefinitionError(f"unknown pipeline {name!r}; shipped: {', '.join(sorted(PRESETS))}", "pipeline")
    return default_registry().build(PRESETS[name])
