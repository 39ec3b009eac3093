"""OpenAI's shapes over the generation service: request bodies into its requests, its results and
events into OpenAI's JSON and server-sent events. No generation logic lives here."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from moltbot.engine.backend import Worker
from moltbot.engine.logprobs import TokenLogprob, TopLogprob
from moltbot.engine.types import ChatMessage, Role, ToolCall
from moltbot.gateway.errors import APIError, envelope, stream_error
from moltbot.gateway.schemas import (
    ChatCompletionRequest,
    ChatMessageIn,
    CompletionRequest,
    EmbeddingRequest,
    UnsupportedContentError,
    _Sampling,
)
from moltbot.gateway.sse import sse
from moltbot.models.bundled import BY_ID as BUNDLED
from moltbot.models.store import ModelSource
from moltbot.services.generation import ChatRequest as ChatJobRequest
from moltbot.services.generation import (
    Choice,
    Event,
    Finish,
    Generation,
    GenerationService,
    GenerationStream,
    OutputFormat,
    Sampling,
    TextDelta,
    TextRequest,
    ToolCallDelta,
    Usage,
)

UsageHook = Callable[[int], None]  # told the total tokens a streamed reply used
_ROLES = {
    "system": Role.SYSTEM,
    "developer": Role.SYSTEM,
    "user": Role.USER,
    "assistant": Role.ASSISTANT,
    "tool": Role.TOOL,
}


@dataclass(slots=True)
class Reply:
    body: dict[str, Any]
    engine_seconds: float


# -- requests ------------------------------------------------------------------------------------


def _refuse_unsupported(name: str | None) -> None:
    if name is not None:
        raise APIError(400, f"'{name}' is not supported by this server", param=name, code="unsupported")


def _sampling(req: _Sampling, *, max_tokens: int | None, logprobs: int | None, param: str = "max_tokens") -> Sampling:
    return Sampling(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        stop=tuple(req.stop_list()),
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        logprobs=logprobs,
        logit_bias=req.logit_bias,
        n=req.n or 1,
        max_tokens_param=param,
    )


def chat_messages(messages: Sequence[ChatMessageIn]) -> list[ChatMessage]:
    """OpenAI's messages as the engine's (text content parts joined; other parts refused by name)."""
    out: list[ChatMessage] = []
    try:
        for i, m in enumerate(messages):
            text = m.text(f"messages.{i}.content")
            made = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ())
            out.append(ChatMessage(_ROLES[m.role], text, made, m.tool_call_id or "", m.name or ""))
    except UnsupportedContentError as exc:
        raise APIError(400, str(exc), param=exc.param, code="unsupported_content") from None
    return out


def chat_request(req: ChatCompletionRequest) -> ChatJobRequest:
    _refuse_unsupported(req.unsupported())
    try:
        count = req.logprob_count()
    except ValueError as exc:
        raise APIError(400, str(exc), param="top_logprobs") from None
    try:
        tools = req.declared_tools()
    except ValueError as exc:
        raise APIError(400, str(exc), param="functions") from None
    requested = req.max_completion_tokens or req.max_tokens
    param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
    fmt = req.response_format
    output = None
    if fmt is not None:
        schema = fmt.json_schema.schema_ if fmt.json_schema is not None else None
        output = OutputFormat(fmt.type, schema)
    return ChatJobRequest(
        model=req.model,
        messages=chat_messages(req.messages),
        sampling=_sampling(req, max_tokens=requested, logprobs=count, param=param),
        output=output,
        tools=tools,
        tool_choice=req.choice(),
        parallel_tool_calls=req.parallel_tool_calls,
    )


def text_request(req: CompletionRequest) -> TextRequest:
    _refuse_unsupported(req.unsupported())
    sampling = _sampling(req, max_tokens=req.max_tokens, logprobs=req.logprobs)
    return TextRequest(req.model, req.prompts(), sampling, suffix=req.suffix, echo=req.echo)


# -- shapes --------------------------------------------------------------------------------------


def usage_json(used: Usage) -> dict[str, Any]:
    """OpenAI's usage object; cached prompt tokens came from the KV cache instead of being computed."""
    return {
        "prompt_tokens": used.prompt_tokens,
        "completion_tokens": used.completion_tokens,
        "total_tokens": used.total_tokens,
        "prompt_tokens_details": {"cached_tokens": used.cached_tokens},
    }


def tool_call_json(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def tool_call_deltas(position: int, call: ToolCall) -> list[dict[str, Any]]:
    """A call as OpenAI streams it: its index, id, type and name with empty arguments, then the arguments."""
    head = {"index": position, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
    return [head, {"index": position, "function": {"arguments": call.arguments}}]


def chat_message(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": choice.text, "refusal": None}
    if choice.tool_calls:
        message["content"] = choice.text or None
        message["tool_calls"] = [tool_call_json(call) for call in choice.tool_calls]
    return message


def chat_body(result: Generation, **extra: Any) -> dict[str, Any]:
    """A `chat.completion` object."""
    choices = [
        {
            "index": c.index,
            "message": chat_message(c),
            "logprobs": chat_logprobs(c.logprobs) if c.logprobs is not None else None,
            "finish_reason": c.finish_reason,
        }
        for c in result.choices
    ]
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.model,
        "system_fingerprint": result.fingerprint,
        "choices": choices,
        "usage": usage_json(result.usage),
        **extra,
    }


def chunk_base(model: str, fingerprint: str) -> dict[str, Any]:
    """The fields every `chat.completion.chunk` of one stream shares."""
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
    }


async def chat_events(
    events: AsyncIterator[Event],
    stream: GenerationStream,
    base: dict[str, Any],
    *,
    include_usage: bool = False,
    logprobs: bool = False,
    on_usage: UsageHook | None = None,
    final: Callable[[], dict[str, Any]] | None = None,
) -> AsyncIterator[bytes]:
    """A chat stream as OpenAI sends it: the role first, content and tool-call deltas, each choice's
    finish, the usage (when asked; `final` adds fields to that last chunk), then [DONE]. An error met
    mid-stream ends it with an error event (the HTTP status is already on the wire)."""
    used = stream.usage
    extra = {"usage": None} if include_usage else {}

    def event(index: int, delta: dict[str, Any], finish: str | None, entries: Sequence[TokenLogprob] = ()) -> bytes:
        shown = chat_logprobs(entries) if logprobs and entries else None
        choice = {"index": index, "delta": delta, "logprobs": shown, "finish_reason": finish}
        return sse({**base, "choices": [choice], **extra})

    try:
        for index in range(stream.choices):
            yield event(index, {"role": "assistant", "content": ""}, None)
        async for item in events:
            if isinstance(item, TextDelta):
                yield event(item.index, {"content": item.text}, None, item.logprobs)
            elif isinstance(item, ToolCallDelta):
                for delta in tool_call_deltas(item.position, item.call):
                    yield event(item.index, {"tool_calls": [delta]}, None)
            elif isinstance(item, Finish):
                yield event(item.index, {}, item.reason)
    except Exception as exc:  # noqa: BLE001 - reported to the client as an error event
        yield error_event(exc)
        yield sse("[DONE]")
        return
    finally:
        report_usage(on_usage, used())
    if include_usage or final is not None:
        last = {**base, "choices": [], "usage": usage_json(used())}
        yield sse({**last, **(final() if final is not None else {})})
    yield sse("[DONE]")


def report_usage(on_usage: UsageHook | None, used: Usage) -> None:
    """Tell the rate limiter what a stream used, also when it ended early (finished choices only)."""
    if on_usage is not None and used.total_tokens:
        on_usage(used.total_tokens)


def error_event(exc: Exception) -> bytes:
    """An error met mid-stream, sent as a final event."""
    error = stream_error(exc)
    return sse(envelope(error.message, error.type, error.param, error.code))


class OpenAIServing:
    """OpenAI's chat, completions, embeddings and models over the generation service."""

    def __init__(self, generation: GenerationService) -> None:
        self.generation = generation

    @property
    def default_model(self) -> str:
        return self.generation.default_model

    # -- chat ----------------------------------------------------------------------------------

    async def chat(self, req: ChatCompletionRequest) -> Reply:
        result = await self.generation.chat(chat_request(req))
        return Reply(chat_body(result), result.engine_seconds)

    async def chat_stream(self, req: ChatCompletionRequest, on_usage: UsageHook | None = None) -> AsyncIterator[bytes]:
        request = chat_request(req)
        stream = await self.generation.chat_stream(request)
        return chat_events(
            aiter(stream),
            stream,
            chunk_base(stream.model, stream.fingerprint),
            include_usage=req.include_usage(),
            logprobs=request.sampling.logprobs is not None,
            on_usage=on_usage,
        )

    # -- completions ---------------------------------------------------------------------------

    async def completion(self, req: CompletionRequest) -> Reply:
        result = await self.generation.complete(text_request(req))
        choices = [
            {
                "text": c.text,
                "index": c.index,
                "logprobs": completion_logprobs(c.logprobs, len(c.echo)) if c.logprobs is not None else None,
                "finish_reason": c.finish_reason,
            }
            for c in result.choices
        ]
        body = {**_completion_base(result.model, result.fingerprint), "choices": choices}
        return Reply({**body, "usage": usage_json(result.usage)}, result.engine_seconds)

    async def completion_stream(
        self, req: CompletionRequest, on_usage: UsageHook | None = None
    ) -> AsyncIterator[bytes]:
        stream = await self.generation.complete_stream(text_request(req))
        return _completion_events(stream, req, on_usage)

    # -- embeddings ----------------------------------------------------------------------------

    async def embeddings(self, req: EmbeddingRequest) -> Reply:
        result = await self.generation.embed(req.model, req.inputs(), truncate=req.truncate, dimensions=req.dimensions)
        data = [
            {"object": "embedding", "index": i, "embedding": _encode_vector(v, req.encoding_format)}
            for i, v in enumerate(result.vectors)
        ]
        used = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
        return Reply({"object": "list", "data": data, "model": result.model, "usage": used}, result.engine_seconds)

    # -- models --------------------------------------------------------------------------------

    def list_models(self) -> dict[str, Any]:
        models = self.generation.models
        loaded = [e for e in models.entries() if e.worker]
        loaded.sort(key=lambda e: e.source.id != self.default_model)  # the default first
        return {"object": "list", "data": [self._card(e.source, e.worker) for e in loaded]}

    def model(self, model_id: str) -> dict[str, Any]:
        worker = self.generation.models.get(model_id)
        entry = self.generation.models.entry(model_id)
        return self._card(entry.source if entry else None, worker, model_id)

    def _card(self, source: ModelSource | None, worker: Worker | None, model_id: str = "") -> dict[str, Any]:
        """OpenAI's model object, and what it is: kind, context, size, digest, provenance and license."""
        model_id = source.id if source else model_id
        card: dict[str, Any] = {
            "id": model_id,
            "object": "model",
            "created": worker.info.created if worker else 0,
            "owned_by": "moltbot",
            "default": model_id == self.default_model,
        }
        if worker is not None:
            card.update(kind=worker.info.kind.value, context_length=worker.info.context_size)
            card["chat_template"] = worker.info.has_chat_template
        if source is not None:
            card.update(version=source.version, size_bytes=source.size_bytes, digest=source.digest or None)
        shipped = BUNDLED.get(model_id)
        if shipped is not None:
            card.update(description=shipped.description, license=shipped.license, source=shipped.source)
            if shipped.sha256:
                card["file_sha256"] = shipped.sha256
        return card


def _completion_base(model: str, fingerprint: str) -> dict[str, Any]:
    return {
        "id": f"cmpl-{secrets.token_hex(12)}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
    }


async def _completion_events(
    stream: GenerationStream, req: CompletionRequest, on_usage: UsageHook | None
) -> AsyncIterator[bytes]:
    base = _completion_base(stream.model, stream.fingerprint)
    extra = {"usage": None} if req.include_usage() else {}
    offsets: dict[int, int] = {}

    def event(index: int, text: str, finish: str | None, entries: tuple[TokenLogprob, ...] = ()) -> bytes:
        shown = None
        if req.logprobs is not None:
            shown = completion_logprobs(entries, offsets.get(index, 0))
            offsets[index] = offsets.get(index, 0) + len(text)
        choice = {"text": text, "index": index, "logprobs": shown, "finish_reason": finish}
        return sse({**base, "choices": [choice], **extra})

    try:
        async for item in stream:
            if isinstance(item, TextDelta):
                yield event(item.index, item.text, None, item.logprobs)
            elif isinstance(item, Finish):
                yield event(item.index, "", item.reason)
    except Exception as exc:  # noqa: BLE001 - reported to the client as an error event
        yield error_event(exc)
        yield sse("[DONE]")
        return
    finally:
        report_usage(on_usage, stream.usage())
    if req.include_usage():
        yield sse({**base, "choices": [], "usage": usage_json(stream.usage())})
    yield sse("[DONE]")


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """Chat's shape: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}."""

    def top(item: TopLogprob) -> dict[str, Any]:
        return {"token": item.token, "logprob": item.logprob, "bytes": list(item.bytes)}

    content = [
        {"token": e.token, "logprob": e.logprob, "bytes": list(e.bytes), "top_logprobs": [top(t) for t in e.top]}
        for e in entries
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(entries: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    """The completions API's shape: parallel lists of tokens, their log-probabilities, alternatives, offsets."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t.token: t.logprob for t in e.top} for e in entries],
        "text_offset": offsets,
    }


def _encode_vector(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode("ascii")
    return vector
