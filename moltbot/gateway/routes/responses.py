"""OpenAI's Responses API (/v1/responses) over the generation service: input as text or items
(messages, function calls and their outputs), `instructions`, `previous_response_id` chains, `store`,
function tools, `text.format`, streaming with the documented event sequence; stored responses can be
read back, listed (their input items) and deleted, each visible only to the key that made it.

Refused with a 400: image, file and audio inputs, built-in tools (web search, file search, ...),
`reasoning` effort, `background`, item references.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from moltbot.engine.types import ChatMessage, Role, ToolCall
from moltbot.gateway.auth import charge_tokens, request_owner
from moltbot.gateway.deps import Generation, Responses
from moltbot.gateway.disconnect import unless_disconnected
from moltbot.gateway.errors import APIError, stream_error
from moltbot.gateway.observe import ENGINE_SECONDS_KEY
from moltbot.gateway.sse import event_stream, named_event
from moltbot.services.generation import (
    ChatRequest,
    Finish,
    GenerationStream,
    OutputFormat,
    Sampling,
    TextDelta,
    ToolCallDelta,
    Usage,
)

router = APIRouter()
_LAX = ConfigDict(extra="ignore")
_ROLES = {"user": Role.USER, "assistant": Role.ASSISTANT, "system": Role.SYSTEM, "developer": Role.SYSTEM}
MAX_ITEMS = 1024


class TextFormat(BaseModel):
    model_config = _LAX
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, max_length=64)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(BaseModel):
    model_config = _LAX
    format: TextFormat | None = None


class ResponsesBody(BaseModel):
    model_config = _LAX
    model: str = Field(min_length=1, max_length=256)
    input: str | Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_ITEMS)]
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, max_length=64)
    store: bool = True
    stream: bool = False
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    truncation: Literal["auto", "disabled"] = "disabled"
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    reasoning: dict[str, Any] | None = None
    background: bool | None = None
    user: str | None = None


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# -- input items ---------------------------------------------------------------------------------


def _text_of(content: Any, where: str) -> str:
    """A message's text: a string, or input_text/output_text parts (other parts are refused)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, "content is a string or a list of parts", param=where)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            raise APIError(
                400, f"{kind!r} content is not accepted here", param=f"{where}.{j}", code="unsupported_content"
            )
    return "\n".join(texts)


def _string(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or (not value and name != "arguments"):
        raise APIError(400, f"{name} must be a non-empty string", param=f"{where}.{name}")
    return value


def normalize(raw: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The input as stored items, each with an id: messages, function calls, function call outputs."""
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    items: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        where = f"input.{i}"
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise APIError(400, "role is user, assistant, system or developer", param=f"{where}.role")
            text = _text_of(item.get("content"), f"{where}.content")
            part = "output_text" if role == "assistant" else "input_text"
            content = [{"type": part, "text": text, **({"annotations": []} if role == "assistant" else {})}]
            items.append({"type": "message", "id": item.get("id") or _new_id("msg"), "role": role, "content": content})
        elif kind == "function_call":
            items.append(
                {
                    "type": "function_call",
                    "id": item.get("id") or _new_id("fc"),
                    "call_id": _string(item, "call_id", where),
                    "name": _string(item, "name", where),
                    "arguments": _string(item, "arguments", where),
                    "status": "completed",
                }
            )
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text_of(output, f"{where}.output")
            call_id = _string(item, "call_id", where)
            items.append(
                {
                    "type": "function_call_output",
                    "id": item.get("id") or _new_id("fco"),
                    "call_id": call_id,
                    "output": text,
                }
            )
        else:
            raise APIError(
                400, f"{kind!r} input items are not supported by this server", param=f"{where}.type", code="unsupported"
            )
    return items


def messages_of(items: Sequence[dict[str, Any]]) -> list[ChatMessage]:
    """Stored items as the engine's messages: consecutive function calls join one assistant message."""
    out: list[ChatMessage] = []
    for item in items:
        kind = item["type"]
        if kind == "message":
            text = "\n".join(part.get("text", "") for part in item["content"])
            out.append(ChatMessage(_ROLES[item["role"]], text))
        elif kind == "function_call":
            call = ToolCall(item["call_id"], item["name"], item["arguments"])
            last = out[-1] if out else None
            if last is not None and last.role is Role.ASSISTANT and (last.tool_calls or not last.content):
                out[-1] = ChatMessage(Role.ASSISTANT, last.content, (*last.tool_calls, call))
            else:
                out.append(ChatMessage(Role.ASSISTANT, "", (call,)))
        elif kind == "function_call_output":
            out.append(ChatMessage(Role.TOOL, item["output"], (), item["call_id"]))
    return out


def _tools(body: ResponsesBody) -> tuple[list[dict[str, Any]], Any]:
    tools = []
    for i, tool in enumerate(body.tools or ()):
        if tool.get("type") != "function":
            raise APIError(
                400,
                f"{tool.get('type')!r} tools are not supported by this server",
                param=f"tools.{i}.type",
                code="unsupported",
            )
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
        tools.append({"type": "function", "function": function})
    choice: Any = body.tool_choice
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
            raise APIError(400, "tool_choice is auto, none, required or {type: function, name}", param="tool_choice")
        choice = {"type": "function", "function": {"name": choice["name"]}}
    return tools, choice


def _output(body: ResponsesBody) -> OutputFormat | None:
    fmt = body.text.format if body.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_schema" and fmt.schema_ is None:
        raise APIError(400, "text.format.schema is required for json_schema", param="text.format.schema")
    return OutputFormat(fmt.type, fmt.schema_)


def _refuse(body: ResponsesBody) -> None:
    if body.reasoning and body.reasoning.get("effort") not in (None, "none", "minimal"):
        raise APIError(400, "reasoning is not supported by this server's models", param="reasoning", code="unsupported")
    if body.background:
        raise APIError(400, "background responses are not supported", param="background", code="unsupported")


# -- the response object -------------------------------------------------------------------------


def _usage(used: Usage) -> dict[str, Any]:
    return {
        "input_tokens": used.prompt_tokens,
        "input_tokens_details": {"cached_tokens": used.cached_tokens},
        "output_tokens": used.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": used.total_tokens,
    }


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": [part]}


def _call_item(item_id: str, call: ToolCall, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }


def _document(
    response_id: str,
    body: ResponsesBody,
    model: str,
    created: int,
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    tools: list[dict[str, Any]],
) -> dict[str, Any]:
    fmt = (
        body.text.format.model_dump(by_alias=True, exclude_none=True)
        if body.text and body.text.format
        else {"type": "text"}
    )
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "store": body.store,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "tool_choice": body.tool_choice or "auto",
        "tools": [{"type": "function", **t["function"]} for t in tools],
        "text": {"format": fmt},
        "truncation": body.truncation,
        "usage": _usage(usage) if usage is not None else None,
        "metadata": body.metadata or {},
        "user": body.user,
    }


# -- routes --------------------------------------------------------------------------------------


@router.post("/v1/responses")
async def create_response(body: ResponsesBody, request: Request, generation: Generation, stored: Responses) -> Response:
    _refuse(body)
    owner = request_owner(request)
    items = normalize(body.input)
    history = await stored.conversation(owner, body.previous_response_id) if body.previous_response_id else []
    messages = messages_of([*history, *items])
    if body.instructions:
        messages.insert(0, ChatMessage(Role.SYSTEM, body.instructions))
    tools, choice = _tools(body)
    sampling = Sampling(
        max_tokens=body.max_output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens_param="max_output_tokens",
    )
    req = ChatRequest(
        model=body.model,
        messages=messages,
        sampling=sampling,
        output=_output(body),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=body.parallel_tool_calls,
        truncate_history=body.truncation == "auto",
    )
    response_id = _new_id("resp")
    created = int(time.time())
    state = request.scope["state"]

    async def keep(document: dict[str, Any]) -> None:
        if body.store:
            fields = {
                "model": document["model"],
                "previous_id": body.previous_response_id,
                "status": document["status"],
            }
            await stored.save(owner, response_id, **fields, document=document, items=items)

    if body.stream:
        stream = await generation.chat_stream(req)

        def document(status: str, output: list[dict[str, Any]], usage: Usage | None) -> dict[str, Any]:
            return _document(
                response_id, body, stream.model, created, status=status, output=output, usage=usage, tools=tools
            )

        events = _events(stream, document, keep, lambda tokens: charge_tokens(state, tokens))
        return event_stream(events)
    result = await unless_disconnected(request, generation.chat(req))
    state[ENGINE_SECONDS_KEY] = result.engine_seconds
    charge_tokens(state, result.usage.total_tokens)
    choice_ = result.choices[0]
    output: list[dict[str, Any]] = []
    if choice_.text or not choice_.tool_calls:
        output.append(_message_item(_new_id("msg"), choice_.text))
    output += [_call_item(_new_id("fc"), call) for call in choice_.tool_calls]
    status = "incomplete" if choice_.finish_reason == "length" else "completed"
    reply = _document(
        response_id, body, result.model, created, status=status, output=output, usage=result.usage, tools=tools
    )
    await keep(reply)
    return JSONResponse(reply)


class _Writer:
    """Builds the output items of a streamed response and the events that announce them."""

    def __init__(self) -> None:
        self.number = 0
        self.output: list[dict[str, Any]] = []
        self.text_id: str | None = None
        self.texts: list[str] = []

    def event(self, kind: str, data: dict[str, Any]) -> bytes:
        payload = {"type": kind, "sequence_number": self.number, **data}
        self.number += 1
        return named_event(kind, payload)

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.text_id, "output_index": len(self.output), "content_index": 0}

    def open_text(self) -> list[bytes]:
        self.text_id, self.texts = _new_id("msg"), []
        item = {**_message_item(self.text_id, "", "in_progress"), "content": []}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            self.event("response.output_item.added", {"output_index": len(self.output), "item": item}),
            self.event("response.content_part.added", {**self._where(), "part": part}),
        ]

    def text(self, delta: str) -> list[bytes]:
        opened = self.open_text() if self.text_id is None else []
        self.texts.append(delta)
        return [*opened, self.event("response.output_text.delta", {**self._where(), "delta": delta, "logprobs": []})]

    def close_text(self) -> list[bytes]:
        if self.text_id is None:
            return []
        text, where = "".join(self.texts), self._where()
        item = _message_item(self.text_id, text)
        done = [
            self.event("response.output_text.done", {**where, "text": text, "logprobs": []}),
            self.event("response.content_part.done", {**where, "part": item["content"][0]}),
            self.event("response.output_item.done", {"output_index": where["output_index"], "item": item}),
        ]
        self.output.append(item)
        self.text_id = None
        return done

    def call(self, call: ToolCall) -> list[bytes]:
        events = self.close_text()
        index, item_id = len(self.output), _new_id("fc")
        where = {"item_id": item_id, "output_index": index}
        added = {**_call_item(item_id, call, "in_progress"), "arguments": ""}
        finished = _call_item(item_id, call)
        self.output.append(finished)
        done = {**where, "arguments": call.arguments, "name": call.name}
        return [
            *events,
            self.event("response.output_item.added", {"output_index": index, "item": added}),
            self.event("response.function_call_arguments.delta", {**where, "delta": call.arguments}),
            self.event("response.function_call_arguments.done", done),
            self.event("response.output_item.done", {"output_index": index, "item": finished}),
        ]


async def _events(stream: GenerationStream, document: Any, keep: Any, charge: Any) -> AsyncIterator[bytes]:
    """The documented sequence: response.created, response.in_progress; per output item
    output_item.added, (content_part.added, output_text.delta..., output_text.done, content_part.done |
    function_call_arguments.delta, .done), output_item.done; then response.completed (or
    response.incomplete). An error ends the stream with an `error` event."""
    writer = _Writer()
    reason: str | None = None
    try:
        started = document("in_progress", [], None)
        yield writer.event("response.created", {"response": started})
        yield writer.event("response.in_progress", {"response": started})
        async for item in stream:
            pieces: list[bytes] = []
            if isinstance(item, TextDelta) and item.text:
                pieces = writer.text(item.text)
            elif isinstance(item, ToolCallDelta):
                pieces = writer.call(item.call)
            elif isinstance(item, Finish):
                reason = item.reason
            for piece in pieces:
                yield piece
        if not writer.output and writer.text_id is None:  # an empty answer is still one message
            for piece in writer.open_text():
                yield piece
        for piece in writer.close_text():
            yield piece
        status = "incomplete" if reason == "length" else "completed"
        final = document(status, writer.output, stream.usage())
        await keep(final)
        yield writer.event(f"response.{status}", {"response": final})
    except Exception as exc:  # noqa: BLE001 - the status is on the wire: the last event says it
        error = stream_error(exc)
        yield writer.event("error", {"code": error.code, "message": error.message, "param": error.param})
    finally:
        used = stream.usage().total_tokens
        if used:
            charge(used)


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, request: Request, stored: Responses) -> dict[str, Any]:
    return (await stored.get(request_owner(request), response_id)).document


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, request: Request, stored: Responses) -> dict[str, Any]:
    await stored.delete(request_owner(request), response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/v1/responses/{response_id}/input_items")
async def input_items(
    response_id: str,
    request: Request,
    stored: Responses,
    *,
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = Query(default="desc"),
    after: str | None = Query(default=None, max_length=64),
) -> dict[str, Any]:
    """The response's own input items (not those of the responses before it), newest first by default."""
    items = list((await stored.get(request_owner(request), response_id)).input)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise APIError(400, f"no input item {after} in this response", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
