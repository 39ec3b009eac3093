"""Pipelines: an ordered list of typed steps over a document's text, declared in YAML or JSON.

A `Document` is a list of `Segment`s (a page each when it came from a paged file, or one for plain
text) and, once a chunking step ran, `Chunk`s that keep the page they came from. A `Step` is a small
class with a name, a pydantic model of its options (unknown fields are refused) and `apply`. Built-in
steps live in `steps.py`; third parties add steps through the entry-point group
`moltbot.pipeline_steps` (the entry point's name is the step's name, its object the `Step` subclass).

A definition:

    name: papers
    steps:
      - step: normalize_unicode
      - step: chunk
        max_tokens: 256
        overlap: 32

A bad definition raises `DefinitionError` naming the step and the field (`param` such as
`steps[1].max_tokens`); the gateway answers it with a 400.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, Generic, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from moltbot.errors import InvalidRequestError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "moltbot.pipeline_steps"
MAX_STEPS = 32
MAX_DEFINITION_BYTES = 64 * 1024
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-.")


class PipelineError(InvalidRequestError):
    """A pipeline that cannot finish on this input because of how it was defined (a client's pattern
    that runs too long, say): a 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param, code="pipeline_failed")


class DefinitionError(InvalidRequestError):
    """A pipeline definition that is not valid; `param` names the step and field (`steps[2].overlap`)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param, code="invalid_pipeline")


@dataclass(slots=True)
class Segment:
    """A run of text: a page (`page`, 1-based) of a paged source, or the whole of a plain text."""

    text: str
    page: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class Chunk:
    """A piece of a segment's final text (`start`:`end`) sized for a model, `tokens` long."""

    index: int
    text: str
    page: int | None
    start: int
    end: int
    tokens: int

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "text": self.text,
            "page": self.page,
            "start": self.start,
            "end": self.end,
            "tokens": self.tokens,
        }


@dataclass(slots=True)
class Document:
    segments: list[Segment]
    chunks: list[Chunk] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_text(cls, text: str) -> Document:
        return cls([Segment(text)])

    @classmethod
    def from_pages(cls, pages: Iterable[str]) -> Document:
        return cls([Segment(text, page=number) for number, text in enumerate(pages, start=1)])

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.segments if s.text)

    def chars(self) -> int:
        return sum(len(s.text) for s in self.segments)

    def to_json(self) -> dict[str, Any]:
        return {
            "segments": [{"page": s.page, "text": s.text, "meta": s.meta} for s in self.segments],
            "chunks": [c.to_json() for c in self.chunks],
            "meta": self.meta,
        }


class OptionError(ValueError):
    """Raised by a step's constructor for a check across its options; `field` is the one to fix."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


class StepOptions(BaseModel):
    """A step's options: typed, and unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


OptionsT = TypeVar("OptionsT", bound=StepOptions)


class Step(ABC, Generic[OptionsT]):
    """One stage of a pipeline. Subclasses set `name`, `summary` and `options_model`, and implement
    `apply`, which may change the document in place and returns it; `notes` go into the run's report."""

    name: ClassVar[str]
    summary: ClassVar[str]
    options_model: ClassVar[type[StepOptions]] = StepOptions

    def __init__(self, options: OptionsT) -> None:
        self.options = options

    @abstractmethod
    def apply(self, doc: Document, notes: dict[str, Any]) -> Document: ...


@dataclass(slots=True, frozen=True)
class StepReport:
    step: str
    seconds: float
    chars_in: int
    chars_out: int
    segments_out: int
    chunks_out: int
    notes: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "seconds": round(self.seconds, 6),
            "chars_in": self.chars_in,
            "chars_out": self.chars_out,
            "segments_out": self.segments_out,
            "chunks_out": self.chunks_out,
            "notes": self.notes,
        }


@dataclass(slots=True, frozen=True)
class Pipeline:
    name: str
    steps: tuple[Step[Any], ...]
    definition: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        """The definition with every option spelled out (defaults filled in)."""
        return {
            "name": self.name,
            "description": self.definition.get("description", ""),
            "steps": [{"step": step.name, **step.options.model_dump(mode="json")} for step in self.steps],
        }

    def run(self, doc: Document) -> tuple[Document, list[StepReport]]:
        reports = []
        for step in self.steps:
            started = time.perf_counter()
            chars_in = doc.chars()
            notes: dict[str, Any] = {}
            doc = step.apply(doc, notes)
            reports.append(
                StepReport(
                    step.name,
                    time.perf_counter() - started,
                    chars_in,
                    doc.chars(),
                    len(doc.segments),
                    len(doc.chunks),
                    notes,
                )
            )
        return doc, reports


@dataclass(slots=True, frozen=True)
class StepInfo:
    name: str
    summary: str
    source: str  # "builtin", or the distribution that provides a plugin
    options_schema: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "source": self.source, "options": self.options_schema}


class StepRegistry:
    """Steps by name: the built-ins, then plugins from the `moltbot.pipeline_steps` entry points. A
    plugin that fails to load, is not a Step or takes a built-in's name is logged and left out."""

    def __init__(self, builtin: Iterable[type[Step[Any]]], *, plugins: bool = True) -> None:
        self._steps: dict[str, tuple[type[Step[Any]], str]] = {}
        self.broken: dict[str, str] = {}
        for cls in builtin:
            self._steps[cls.name] = (cls, "builtin")
        if plugins:
            self._load_plugins()

    def _load_plugins(self) -> None:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            source = point.dist.name if point.dist is not None else point.value
            try:
                cls = point.load()
            except Exception as exc:  # noqa: BLE001 - a third party's import error must not stop the server
                self._refuse(point.name, f"{source}: it failed to load ({type(exc).__name__}: {exc})")
                continue
            if not (isinstance(cls, type) and issubclass(cls, Step)):
                self._refuse(point.name, f"{source}: {point.value} is not a moltbot.pipelines.Step subclass")
            elif point.name in self._steps:
                self._refuse(point.name, f"{source}: the name is taken by a {self._steps[point.name][1]} step")
            elif getattr(cls, "name", None) != point.name or not _valid_name(point.name):
                self._refuse(point.name, f"{source}: the entry point's name and the step's `name` must agree")
            else:
                self._steps[point.name] = (cls, source)

    def _refuse(self, name: str, reason: str) -> None:
        self.broken[name] = reason
        log.error("pipeline step %r is not available: %s", name, reason)

    def names(self) -> list[str]:
        return sorted(self._steps)

    def get(self, name: str) -> type[Step[Any]] | None:
        found = self._steps.get(name)
        return found[0] if found else None

    def describe(self) -> list[StepInfo]:
        return [
            StepInfo(name, cls.summary, source, cls.options_model.model_json_schema())
            for name, (cls, source) in sorted(self._steps.items())
        ]

    def build(self, raw: object) -> Pipeline:
        """A pipeline from a parsed definition (a mapping); raises DefinitionError."""
        if not isinstance(raw, Mapping):
            raise DefinitionError("a pipeline definition is an object with a `steps` list")
        unknown = set(raw) - {"name", "description", "steps"}
        if unknown:
            field_name = sorted(map(str, unknown))[0]
            raise DefinitionError(f"unknown field {field_name!r} in the pipeline definition", field_name)
        name = raw.get("name", "pipeline")
        if not isinstance(name, str) or not 0 < len(name) <= 64 or not _valid_name(name.lower()):
            raise DefinitionError("`name` is 1 to 64 letters, digits, '_', '-' or '.'", "name")
        if not isinstance(raw.get("description", ""), str):
            raise DefinitionError("`description` is a string", "description")
        steps = raw.get("steps")
        if not isinstance(steps, list) or not 0 < len(steps) <= MAX_STEPS:
            raise DefinitionError(f"`steps` is a list of 1 to {MAX_STEPS} steps", "steps")
        built: list[Step[Any]] = []
        for index, item in enumerate(steps):
            where = f"steps[{index}]"
            if not isinstance(item, Mapping) or not isinstance(item.get("step"), str):
                raise DefinitionError(f"{where}: each step is an object whose `step` names it", f"{where}.step")
            step_name = str(item["step"])
            cls = self.get(step_name)
            if cls is None:
                why = f" ({self.broken[step_name]})" if step_name in self.broken else ""
                raise DefinitionError(
                    f"{where}: unknown step {step_name!r}{why}; known steps: {', '.join(self.names())}",
                    f"{where}.step",
                )
            options = {str(k): v for k, v in item.items() if k != "step"}
            try:
                parsed = cls.options_model.model_validate(options)
            except ValidationError as exc:
                first = exc.errors()[0]
                location = ".".join(str(part) for part in first["loc"])
                raise DefinitionError(
                    f"{where} ({step_name}): {location or 'options'}: {first['msg']}",
                    f"{where}.{location}" if location else where,
                ) from None
            try:
                built.append(cls(parsed))
            except OptionError as exc:  # a step's own check across its options
                raise DefinitionError(f"{where} ({step_name}): {exc.field}: {exc}", f"{where}.{exc.field}") from None
        return Pipeline(name, tuple(built), {**dict(raw), "name": name})


def _valid_name(name: str) -> bool:
    return bool(name) and set(name) <= _NAME_CHARS


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a definition is small, and aliases are how a few bytes of
    YAML become gigabytes once expanded."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError("while reading a pipeline", None, "aliases are not allowed", event.start_mark)
        return super().compose_node(parent, index)


def parse_definition_text(text: str) -> object:
    """A definition's YAML or JSON text, parsed (not yet checked); raises DefinitionError."""
    if len(text.encode()) > MAX_DEFINITION_BYTES:
        raise DefinitionError(f"a pipeline definition is at most {MAX_DEFINITION_BYTES // 1024} KiB")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML or JSON"
        raise DefinitionError(f"the pipeline definition cannot be read{where}: {problem}") from None
