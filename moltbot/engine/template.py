"""A model's own chat template (Jinja, from the GGUF or tokenizer_config.json), rendered as Hugging Face
transformers renders it: a sandboxed, immutable environment; `raise_exception`, `strftime_now` and
transformers' `tojson`; `tools`, assistant `tool_calls`, `tool` messages and `add_generation_prompt`.

A template that does not compile is reported when the model loads (it then falls back to the plain
transcript); one that cannot render a request raises TemplateRenderError, a 400 that says why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from moltbot.engine.errors import EngineError
from moltbot.engine.types import ChatMessage, Role

MAX_RENDERED_CHARS = 4 << 20  # a template loop cannot blow up memory past this


class TemplateError(EngineError):
    """The model's chat template does not compile."""


class TemplateRenderError(EngineError):
    """The chat template could not render this request (it raised, or the request does not fit it)."""


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:  # fmt: skip
    # transformers' own tojson (not Jinja's, which escapes HTML characters and sorts keys).
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now(UTC).strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def message_dict(message: ChatMessage) -> dict[str, Any]:
    """A message as chat templates expect it (OpenAI's shape; tool-call arguments as objects)."""
    item: dict[str, Any] = {"role": message.role.value, "content": message.content}
    if message.tool_calls:
        item["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_value()}}
            for call in message.tool_calls
        ]
    if message.role is Role.TOOL:
        item["tool_call_id"] = message.tool_call_id
        if message.name:
            item["name"] = message.name
    return item


class ChatTemplate:
    """One compiled chat template with the model's special tokens."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        try:
            self._template = _environment().from_string(source)
        except jinja2.exceptions.TemplateError as exc:
            raise TemplateError(f"the model's chat template does not compile: {exc}") from None
        self._specials = {"bos_token": bos_token, "eos_token": eos_token}
        self.source = source

    @property
    def supports_tools(self) -> bool:
        return "tools" in self.source

    def render(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[dict[str, Any]] | None = None,
        *,
        add_generation_prompt: bool = True,
    ) -> str:
        context = {
            "messages": [message_dict(m) for m in messages],
            "tools": list(tools) if tools else None,
            "add_generation_prompt": add_generation_prompt,
            **self._specials,
        }
        try:
            rendered = self._template.render(**context)
        except jinja2.exceptions.SecurityError:
            raise TemplateRenderError("the model's chat template tried an operation the sandbox forbids") from None
        except jinja2.exceptions.TemplateError as exc:
            raise TemplateRenderError(f"the model's chat template refused this request: {exc}", "messages") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            # A template written for another message shape (say, content parts where a string was expected).
            raise TemplateRenderError(f"the chat template cannot render this request: {exc}", "messages") from None
        if len(rendered) > MAX_RENDERED_CHARS:
            raise TemplateRenderError("the rendered chat is too long", "messages")
        return rendered
