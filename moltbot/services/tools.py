"""Tool calling as OpenAI's API does it, over a model's own markup (Qwen2.5: `<tool_call>{…}</tool_call>`).

- Tools are checked when a request arrives: function names, parameter schemas (valid JSON Schema), no
  duplicates; a choice of a function that was not declared is an error.
- Decoding: the JSON after `<tool_call>` is constrained by a grammar of the declared calls (each
  function's name with arguments valid against its parameters), from the moment the model opens a call
  (`auto`), or from the start of the answer (`required`, a named function: the answer is prefilled
  with the opening tag).
- Parsing: complete `<tool_call>` blocks become `tool_calls`; small models often drop the tags, so an
  answer that is only a JSON call (bare or in a ```json fence) is taken too, but only for a declared
  function. Markup never reaches `content`.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

from moltbot.engine.errors import InvalidGrammarError
from moltbot.engine.grammars import check_schema
from moltbot.engine.types import ToolCall
from moltbot.errors import InvalidRequestError

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|$)", re.DOTALL)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
MAX_TOOLS = 128


@dataclass(slots=True, frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    strict: bool = False

    def template_entry(self) -> dict[str, Any]:
        """The tool as chat templates expect it (OpenAI's shape)."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass(slots=True, frozen=True)
class ToolPlan:
    """What a request asks of tools: the declared ones, which may be called, and how decoding is bound."""

    tools: tuple[Tool, ...]
    choice: str  # "auto", "required", or a function's name ("none" never reaches a plan)
    parallel: bool = True

    @property
    def callable(self) -> tuple[Tool, ...]:
        if self.choice in ("auto", "required"):
            return self.tools
        return tuple(t for t in self.tools if t.name == self.choice)

    @property
    def forced(self) -> bool:
        return self.choice != "auto"

    def grammar(self) -> str:
        """GBNF for one call's JSON: {"name": <a callable function>, "arguments": <valid for it>}."""
        variants = [
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": tool.parameters or {"type": "object"}},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for tool in self.callable
        ]
        schema = variants[0] if len(variants) == 1 else {"oneOf": variants}
        try:
            return str(json_schema_to_gbnf(json.dumps(schema), prop_order=["name", "arguments"]))
        except Exception as exc:  # noqa: BLE001 - the converter raises anything on schemas it does not expect
            raise InvalidRequestError(f"a tool's parameters cannot be enforced: {exc}", param="tools") from None


def parse_tools(raw: Sequence[dict[str, Any]]) -> tuple[Tool, ...]:
    """Declared tools, checked: OpenAI's `{"type": "function", "function": {...}}` entries."""
    if len(raw) > MAX_TOOLS:
        raise InvalidRequestError(f"at most {MAX_TOOLS} tools are allowed", param="tools")
    tools: list[Tool] = []
    for index, entry in enumerate(raw):
        where = f"tools.{index}"
        function = entry.get("function") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or entry.get("type") != "function" or not isinstance(function, dict):
            raise InvalidRequestError("a tool is {'type': 'function', 'function': {...}}", param=where)
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            message = "a function name is 1-64 letters, digits, '_' or '-'"
            raise InvalidRequestError(message, param=f"{where}.function.name")
        if any(t.name == name for t in tools):
            raise InvalidRequestError(f"the function {name!r} is declared twice", param=f"{where}.function.name")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise InvalidRequestError("parameters must be a JSON schema object", param=f"{where}.function.parameters")
        try:
            check_schema(parameters, param=f"{where}.function.parameters")
        except InvalidGrammarError as exc:
            raise InvalidRequestError(exc.message, param=exc.param) from None
        description = function.get("description") or ""
        tools.append(Tool(name, str(description), parameters, bool(function.get("strict"))))
    return tuple(tools)


def plan(tools: tuple[Tool, ...], choice: Any, parallel: bool | None) -> ToolPlan | None:
    """The request's tool plan, or None when no tool may be called (no tools, or `tool_choice: none`)."""
    if not tools:
        if choice not in (None, "none", "auto"):
            raise InvalidRequestError("tool_choice needs tools", param="tool_choice")
        return None
    if choice is None or choice == "auto":
        return ToolPlan(tools, "auto", parallel is not False)
    if choice == "none":
        return None
    if choice == "required":
        return ToolPlan(tools, "required", parallel is not False)
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequestError(
            "tool_choice is 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}",
            param="tool_choice",
        )
    if all(t.name != name for t in tools):
        raise InvalidRequestError(f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
    return ToolPlan(tools, name, parallel is not False)


def call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def _call(text: str, names: set[str]) -> ToolCall | None:
    """A call from one JSON object `{"name": ..., "arguments": {...}}` of a declared function, else None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("name") not in names:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(call_id(), str(value["name"]), json.dumps(arguments, ensure_ascii=False))


def extract(text: str, tools: Sequence[Tool]) -> tuple[str, list[ToolCall]]:
    """The content and the calls of a whole answer. Blocks that are not a declared call stay content."""
    names = {t.name for t in tools}
    calls: list[ToolCall] = []
    if OPEN in text:
        kept: list[str] = []
        last = 0
        for match in _BLOCK.finditer(text):
            call = _call(match.group(1).strip(), names)
            if call is None:
                continue
            kept.append(text[last : match.start()])
            last = match.end()
            calls.append(call)
        kept.append(text[last:])
        return "".join(kept).strip() if calls else text, calls
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    body = fenced.group(1) if fenced else stripped
    candidates = [body] if body.startswith("{") else []
    if body.startswith("[") or "\n" in body:  # several bare calls: a JSON list, or one per line
        try:
            listed = json.loads(body)
            candidates = [json.dumps(v) for v in listed] if isinstance(listed, list) else candidates
        except ValueError:
            candidates = [line for line in body.splitlines() if line.strip()] if body.startswith("{") else []
    found = [_call(c, names) for c in candidates]
    if found and all(c is not None for c in found):
        return "", [c for c in found if c is not None]
    return text, []


class StreamSplitter:
    """Streamed text into content deltas and whole tool calls, holding back what may be markup.

    Text that may begin a call (a prefix of `<tool_call>`, or an answer that starts like JSON) is held
    until it is clearly content or the answer ends; a call is released whole when its block closes."""

    def __init__(self, tools: Sequence[Tool], *, prefilled: str = "", parallel: bool = True) -> None:
        self._tools = tuple(tools)
        self._parallel = parallel
        self._names = {t.name for t in tools}
        self._held = prefilled
        self._started = bool(prefilled)  # whether any content has been released
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        """Content that can be sent now, and the calls completed by this text."""
        self._held += text
        out: list[str] = []
        new: list[ToolCall] = []
        while self._held:
            at = self._held.find(OPEN)
            if at < 0:
                if not self._started and self._held.lstrip()[:1] in ("{", "[", "`"):
                    break  # the answer may be a bare or fenced JSON call: decided at the end
                keep = _partial_suffix(self._held, OPEN)
                out.append(self._held[: len(self._held) - keep])
                self._held = self._held[len(self._held) - keep :]
                break
            out.append(self._held[:at])
            end = self._held.find(CLOSE, at)
            if end < 0:
                self._held = self._held[at:]
                break
            block = self._held[at + len(OPEN) : end]
            self._held = self._held[end + len(CLOSE) :]
            call = _call(block.strip(), self._names)
            if call is None:
                out.append(OPEN + block + CLOSE)
            else:
                new.append(call)
        content = "".join(out)
        if content.strip():
            self._started = True
        return content, self._keep(new)

    def _keep(self, calls: list[ToolCall]) -> list[ToolCall]:
        """The calls to release (only the first of an answer when parallel calls are off)."""
        if not self._parallel:
            calls = calls[: max(0, 1 - len(self.calls))]
        self.calls.extend(calls)
        return calls

    def finish(self) -> tuple[str, list[ToolCall]]:
        """At the end: what was held, as content or as calls (an unclosed block or a bare JSON call)."""
        held, self._held = self._held, ""
        if not held:
            return "", []
        content, calls = extract(held, self._tools)
        return content, self._keep(calls)


def _partial_suffix(text: str, marker: str) -> int:
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0
