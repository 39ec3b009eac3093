"""Anthropic's Messages API (/v1/messages, /v1/messages/count_tokens) over the generation service, in
Anthropic's shapes: content blocks, `tool_use` / `tool_result`, its stop reasons, its event stream and
its error envelope. The key may come as `x-api-key` (as Anthropic's SDKs send it) or as a bearer token.

Not supported, and refused with a 400: image and document blocks, extended thinking.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from moltbot.engine.types import ChatMessage, Role, ToolCall
from moltbot.gateway.auth import charge_tokens
from moltbot.gateway.deps import Generation
from moltbot.gateway.disconnect import unless_disconnected
from moltbot.gateway.errors import APIError, error_body, stream_error
from moltbot.gateway.observe import ENGINE_SECONDS_KEY
from moltbot.gateway.sse import event_stream, named_event
from moltbot.services.generation import (
    ChatRequest,
    Choice,
    Finish,
    GenerationStream,
    Sampling,
    TextDelta,
    ToolCallDelta,
    Usage,
)

router = APIRouter()
_LAX = ConfigDict(extra="ignore")
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class TextBlock(BaseModel):
    model_config = _LAX
    type: Literal["text"]
    text: str


class ToolUseBlock(BaseModel):
    model_config = _LAX
    type: Literal["tool_use"]
    id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=256)
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(BaseModel):
    model_config = _LAX
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1, max_length=256)
    content: str | list[TextBlock] = ""
    is_error: bool = False


class OtherBlock(BaseModel):
    """A block type this server does not take (image, document, thinking, ...): refused by name."""

    model_config = _LAX
    type: str


Block = Annotated[TextBlock | ToolUseBlock | ToolResultBlock | OtherBlock, Field(union_mode="left_to_right")]


class Message(BaseModel):
    model_config = _LAX
    role: Literal["user", "assistant"]
    content: str | list[Block]


class Tool(BaseModel):
    model_config = _LAX
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoice(BaseModel):
    model_config = _LAX
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class _Conversation(BaseModel):
    model_config = _LAX
    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: ToolChoice | None = None
    thinking: dict[str, Any] | None = None


class MessagesBody(_Conversation):
    max_tokens: Annotated[int, Field(ge=1)]
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None


# -- conversions ---------------------------------------------------------------------------------


def _text(content: str | Sequence[TextBlock]) -> str:
    return content if isinstance(content, str) else "\n".join(b.text for b in content)


def _messages(body: _Conversation) -> list[ChatMessage]:
    """Anthropic's conversation as the engine's: tool results become tool messages, tool_use blocks an
    assistant message's calls."""
    if body.thinking is not None and body.thinking.get("type") != "disabled":
        raise APIError(400, "extended thinking is not supported by this server", param="thinking")
    out = [ChatMessage(Role.SYSTEM, _text(body.system))] if body.system else []
    for i, message in enumerate(body.messages):
        blocks = [TextBlock(type="text", text=message.content)] if isinstance(message.content, str) else message.content
        texts: list[str] = []
        calls: list[ToolCall] = []
        for j, block in enumerate(blocks):
            where = f"messages.{i}.content.{j}"
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif isinstance(block, ToolUseBlock) and message.role == "assistant":
                calls.append(ToolCall(block.id, block.name, json.dumps(block.input, ensure_ascii=False)))
            elif isinstance(block, ToolResultBlock) and message.role == "user":
                result = _text(block.content)
                out.append(
                    ChatMessage(Role.TOOL, f"Error: {result}" if block.is_error else result, (), block.tool_use_id)
                )
            else:
                raise APIError(400, f"{block.type!r} blocks are not accepted in {message.role} messages", param=where)
        role = Role.USER if message.role == "user" else Role.ASSISTANT
        if texts or calls or not isinstance(message.content, list):
            out.append(ChatMessage(role, "\n".join(texts), tuple(calls)))
    return out


def _tools(body: _Conversation) -> tuple[list[dict[str, Any]], Any, bool | None]:
    tools = [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description or "", "parameters": t.input_schema},
        }
        for t in body.tools or ()
    ]
    choice = body.tool_choice
    if choice is None or not tools:
        return tools, None, None
    parallel = False if choice.disable_parallel_tool_use else None
    if choice.type == "tool":
        if not choice.name:
            raise APIError(400, "tool_choice of type 'tool' needs a name", param="tool_choice.name")
        return tools, {"type": "function", "function": {"name": choice.name}}, parallel
    return tools, {"auto": "auto", "any": "required", "none": "none"}[choice.type], parallel


def _request(body: MessagesBody) -> ChatRequest:
    tools, choice, parallel = _tools(body)
    sampling = Sampling(
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        stop=tuple(body.stop_sequences or ()),
    )
    return ChatRequest(
        body.model, _messages(body), sampling, tools=tools, tool_choice=choice, parallel_tool_calls=parallel
    )


def _stop_reason(finish: str | None, stop_sequence: str) -> str:
    if stop_sequence and finish == "stop":
        return "stop_sequence"
    return _STOP_REASONS.get(finish or "stop", "end_turn")


def _usage(used: Usage) -> dict[str, Any]:
    return {
        "input_tokens": used.prompt_tokens - used.cached_tokens,
        "output_tokens": used.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": used.cached_tokens,
    }


def _arguments(call: ToolCall) -> dict[str, Any]:
    try:
        value = json.loads(call.arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _content(choice: Choice) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if choice.text or not choice.tool_calls:
        blocks.append({"type": "text", "text": choice.text})
    for call in choice.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _arguments(call)})
    return blocks


def _message_id() -> str:
    return f"msg_{secrets.token_hex(12)}"


# -- routes --------------------------------------------------------------------------------------


@router.post("/v1/messages")
async def messages(body: MessagesBody, request: Request, generation: Generation) -> Response:
    req = _request(body)
    state = request.scope["state"]
    if body.stream:
        stream = await generation.chat_stream(req)
        events = _events(stream, request.url.path, lambda tokens: charge_tokens(state, tokens))
        return event_stream(events)
    result = await unless_disconnected(request, generation.chat(req))
    state[ENGINE_SECONDS_KEY] = result.engine_seconds
    charge_tokens(state, result.usage.total_tokens)
    choice = result.choices[0]
    return JSONResponse(
        {
            "id": _message_id(),
            "type": "message",
            "role": "assistant",
            "model": result.model,
            "content": _content(choice),
            "stop_reason": _stop_reason(choice.finish_reason, choice.stop_sequence),
            "stop_sequence": choice.stop_sequence or None,
            "usage": _usage(result.usage),
        }
    )


@router.post("/v1/messages/count_tokens")
async def count_tokens(body: _Conversation, generation: Generation) -> dict[str, Any]:
    """The prompt's tokens as this model's template renders the conversation (and its tools)."""
    tools, choice, parallel = _tools(body)
    req = ChatRequest(body.model, _messages(body), tools=tools, tool_choice=choice, parallel_tool_calls=parallel)
    job = await generation.prepare_chat(req)
    return {"input_tokens": len(job.prompt.tokens)}


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return named_event(kind, {"type": kind, **data})


async def _events(stream: GenerationStream, path: str, charge: Any) -> AsyncIterator[bytes]:
    """Anthropic's stream: message_start, a content block per text run or tool call (start, deltas,
    stop), message_delta with the stop reason and usage, message_stop; an error ends it with `error`."""
    start: dict[str, Any] = {
        "id": _message_id(),
        "type": "message",
        "role": "assistant",
        "model": stream.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": stream.prompt_tokens, "output_tokens": 0},
    }
    index = -1
    text_open = False
    reason: str | None = None
    matched = ""
    try:
        yield _sse("message_start", {"message": start})
        async for event in stream:
            if isinstance(event, TextDelta) and event.text:
                if not text_open:
                    index += 1
                    text_open = True
                    yield _sse("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
                yield _sse("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": event.text}})
            elif isinstance(event, ToolCallDelta):
                if text_open:
                    yield _sse("content_block_stop", {"index": index})
                    text_open = False
                index += 1
                call = event.call
                block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
                yield _sse("content_block_start", {"index": index, "content_block": block})
                delta = {"type": "input_json_delta", "partial_json": call.arguments}
                yield _sse("content_block_delta", {"index": index, "delta": delta})
                yield _sse("content_block_stop", {"index": index})
            elif isinstance(event, Finish):
                reason, matched = event.reason, event.stop_sequence
        if text_open:
            yield _sse("content_block_stop", {"index": index})
        stop = _stop_reason(reason, matched)
        yield _sse(
            "message_delta",
            {"delta": {"stop_reason": stop, "stop_sequence": matched or None}, "usage": _usage(stream.usage())},
        )
        yield _sse("message_stop", {})
    except Exception as exc:  # noqa: BLE001 - the status is on the wire: the last event says it
        error = stream_error(exc)
        body = error_body(path, error)
        yield named_event("error", body)
    finally:
        used = stream.usage().total_tokens
        if used:
            charge(used)
