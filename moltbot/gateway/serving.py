"""What the OpenAI-compatible endpoints do: validate against limits, call the engine, shape replies."""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from moltbot.engine.backend import Worker
from moltbot.engine.errors import ContextLengthError, RequestTimeoutError, UnsupportedOperationError
from moltbot.engine.grammars import JSON_OBJECT_GRAMMAR, json_schema_grammar
from moltbot.engine.logprobs import TokenLogprob, TopLogprob
from moltbot.engine.types import (
    ChatMessage,
    Chunk,
    Completion,
    FinishReason,
    ModelKind,
    Prompt,
    Role,
    SamplingParams,
    ToolCall,
)
from moltbot.engine.worker import collect
from moltbot.errors import MoltbotError
from moltbot.gateway.errors import APIError, envelope, from_engine
from moltbot.gateway.schemas import (
    ChatCompletionRequest,
    ChatMessageIn,
    CompletionRequest,
    EmbeddingRequest,
    ResponseFormat,
    UnsupportedContentError,
)
from moltbot.gateway.sse import sse
from moltbot.models.bundled import BY_ID as BUNDLED
from moltbot.models.manager import ModelManager
from moltbot.models.store import ModelSource
from moltbot.services.tools import OPEN as TOOL_OPEN
from moltbot.services.tools import StreamSplitter, Tool, ToolPlan, extract, parse_tools, plan
from moltbot.settings import Settings

log = logging.getLogger(__name__)
_LONG_TEXT = 16_384  # characters; longer prompts are tokenized off the event loop
# The defaults of every generation (chat, completions, session turns), as OpenAI's: temperature 1, top_p 1,
# max_tokens the room left in the context (completions: 16), no penalties.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
UsageHook = Callable[[int], None]  # told the total tokens a streamed reply used
_ROLES = {
    "system": Role.SYSTEM,
    "developer": Role.SYSTEM,
    "user": Role.USER,
    "assistant": Role.ASSISTANT,
    "tool": Role.TOOL,
}


@dataclass(slots=True)
class ChatJob:
    """A chat request made ready for the engine: the prompt, its sampling, and how tools are read back."""

    worker: Worker
    prompt: Prompt
    params: SamplingParams
    tools: ToolPlan | None = None
    prefill: str = ""  # text the answer starts with (an opened tool call), part of the prompt

    def splitter(self) -> StreamSplitter | None:
        if self.tools is None:
            return None
        return StreamSplitter(self.tools.callable, prefilled=self.prefill, parallel=self.tools.parallel)

    def finish(self, reason: FinishReason | None, *, called: bool) -> str | None:
        if called and reason is FinishReason.STOP:
            return "tool_calls"
        return finish_reason(reason)

    def message(self, text: str, reason: FinishReason | None) -> tuple[dict[str, Any], str | None]:
        """The assistant message of a whole answer, and its finish reason."""
        if self.tools is None:
            return {"role": "assistant", "content": text, "refusal": None}, finish_reason(reason)
        content, calls = extract(self.prefill + text, self.tools.callable)
        if not calls:
            content = text  # no call after all: the answer as written (never the prefilled tag)
        if not self.tools.parallel:
            calls = calls[:1]
        message: dict[str, Any] = {"role": "assistant", "content": content or None, "refusal": None}
        if calls:
            message["tool_calls"] = [tool_call_json(call) for call in calls]
        return message, self.finish(reason, called=bool(calls))


def tool_call_json(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def tool_call_deltas(splitter: StreamSplitter | None, call: ToolCall) -> list[dict[str, Any]]:
    """A call as OpenAI streams it: its index, id, type and name with empty arguments, then the arguments."""
    index = splitter.calls.index(call) if splitter is not None and call in splitter.calls else 0
    head = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
    return [head, {"index": index, "function": {"arguments": call.arguments}}]


@dataclass(slots=True)
class Reply:
    body: dict[str, Any]
    engine_seconds: float


def usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    """OpenAI's usage object; `cached` prompt tokens came from the KV cache instead of being computed."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
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


def finish_reason(reason: FinishReason | None) -> str | None:
    if reason is None:
        return None
    return "length" if reason is FinishReason.LENGTH else "stop"


async def _off_loop_if_long(size: int, fn: Any, *args: Any) -> Any:
    if size > _LONG_TEXT:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


class OpenAIServing:
    """Chat, completions and embeddings over the loaded models."""

    def __init__(self, models: ModelManager, settings: Settings, default_model: str = "") -> None:
        self._models = models
        self._settings = settings
        self.default_model = default_model

    # -- shared checks -------------------------------------------------------------------------

    def generator(self, model_id: str) -> Worker:
        """The worker of a loaded text-generation model (400 for an embedding model)."""
        worker = self._models.get(model_id)
        if worker.info.kind is not ModelKind.GENERATE:
            raise UnsupportedOperationError(f"model {model_id!r} is an embedding model", param="model")
        return worker

    def _check_common(self, n: int | None, stops: Sequence[str], unsupported: str | None) -> None:
        limits = self._settings
        if unsupported is not None:
            raise APIError(
                400, f"'{unsupported}' is not supported by this server", param=unsupported, code="unsupported"
            )
        if (n or 1) > limits.max_n:
            raise APIError(400, f"n must be at most {limits.max_n}", param="n", code="invalid_value")
        if len(stops) > limits.max_stop:
            raise APIError(400, f"at most {limits.max_stop} stop sequences are allowed", param="stop")
        if any(len(s) > limits.max_stop_chars for s in stops):
            raise APIError(400, f"stop sequences are limited to {limits.max_stop_chars} characters", param="stop")

    def _max_tokens(self, worker: Worker, prompt: Prompt, requested: int | None, param: str) -> int:
        room = worker.info.context_size - len(prompt.tokens)
        if room <= 0:
            raise ContextLengthError(
                f"the prompt has {len(prompt.tokens)} tokens; the model's context is {worker.info.context_size}",
                param="messages" if param == "max_tokens" and requested is None else param,
            )
        if requested is None:
            return min(room, self._settings.max_tokens_limit)
        if requested > self._settings.max_tokens_limit:
            raise APIError(400, f"{param} must be at most {self._settings.max_tokens_limit}", param=param)
        if requested > room:
            raise ContextLengthError(
                f"{param} ({requested}) exceeds the context left after the prompt ({room} tokens)", param=param
            )
        return requested

    @staticmethod
    def _grammar(fmt: ResponseFormat | None) -> str | None:
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return JSON_OBJECT_GRAMMAR
        if fmt.json_schema is None:
            raise APIError(400, "response_format.json_schema is required", param="response_format.json_schema")
        return json_schema_grammar(fmt.json_schema.schema_)

    # -- chat ----------------------------------------------------------------------------------

    def fingerprint(self, worker: Worker) -> str:
        return self._models.fingerprint(worker)

    def _messages(self, messages: list[ChatMessageIn]) -> list[ChatMessage]:
        if len(messages) > self._settings.max_messages:
            raise APIError(400, f"at most {self._settings.max_messages} messages are allowed", param="messages")
        out: list[ChatMessage] = []
        calls: set[str] = set()
        try:
            for i, m in enumerate(messages):
                text = m.text(f"messages.{i}.content")
                made = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ())
                calls.update(c.id for c in made)
                if m.role == "tool" and m.tool_call_id not in calls:
                    where = f"messages.{i}.tool_call_id"
                    raise APIError(400, "a tool message answers no earlier assistant tool call", param=where)
                out.append(ChatMessage(_ROLES[m.role], text, made, m.tool_call_id or "", m.name or ""))
        except UnsupportedContentError as exc:
            raise APIError(400, str(exc), param=exc.param, code="unsupported_content") from None
        return out

    def _tool_plan(self, req: ChatCompletionRequest, worker: Worker) -> tuple[tuple[Tool, ...], ToolPlan | None]:
        try:
            declared = req.declared_tools()
        except ValueError as exc:
            raise APIError(400, str(exc), param="functions") from None
        tools = parse_tools(declared)
        tool_plan = plan(tools, req.choice(), req.parallel_tool_calls)
        if tools and not worker.backend.supports_tools:
            message = f"model {worker.info.id!r} was not made to call tools (its chat template has none)"
            raise APIError(400, message, param="tools", code="unsupported")
        if tool_plan is not None and req.response_format is not None and req.response_format.type != "text":
            raise APIError(400, "response_format cannot be combined with tools here", param="response_format")
        return tools, tool_plan

    def _logprob_options(self, worker: Worker, count: int | None, bias: dict[str, float] | None) -> dict[str, Any]:
        """SamplingParams' logprobs and logit_bias, checked against the model."""
        if (count is not None or bias) and not worker.info.token_level:
            raise APIError(400, f"model {worker.info.id!r} reports no token log-probabilities", param="logprobs")
        pairs: list[tuple[int, float]] = []
        for key, value in (bias or {}).items():
            if not key.isdigit() or int(key) >= worker.info.vocab_size:
                raise APIError(400, f"logit_bias key {key!r} is not a token id of this model", param="logit_bias")
            pairs.append((int(key), float(value)))
        return {"logprobs": count, "logit_bias": tuple(pairs)}

    async def prepare_chat(self, req: ChatCompletionRequest) -> ChatJob:
        self._check_common(req.n, req.stop_list(), req.unsupported())
        worker = self.generator(req.model)
        try:
            count = req.logprob_count()
        except ValueError as exc:
            raise APIError(400, str(exc), param="top_logprobs") from None
        token_options = self._logprob_options(worker, count, req.logit_bias)
        messages = self._messages(req.messages)
        tools, tool_plan = self._tool_plan(req, worker)
        shown = [t.template_entry() for t in tools] if tool_plan is not None else None
        prefill = TOOL_OPEN + "\n" if tool_plan is not None and tool_plan.forced else ""
        size = sum(len(m.content) for m in messages)
        render = functools.partial(worker.backend.render_chat, messages, shown, prefill=prefill)
        prompt: Prompt = await _off_loop_if_long(size, render)
        requested = req.max_completion_tokens or req.max_tokens
        param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        params = SamplingParams(
            max_tokens=self._max_tokens(worker, prompt, requested, param),
            temperature=DEFAULT_TEMPERATURE if req.temperature is None else req.temperature,
            top_p=DEFAULT_TOP_P if req.top_p is None else req.top_p,
            seed=req.seed,
            stop=tuple(req.stop_list()),
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            grammar=self._grammar(req.response_format),
            **token_options,
        )
        if tool_plan is not None:
            grammar = tool_plan.grammar()
            params = replace(params, tool_trigger=TOOL_OPEN, tool_grammar=grammar, tool_active=tool_plan.forced)
        return ChatJob(worker, prompt, params, tool_plan, prefill)

    async def chat(self, req: ChatCompletionRequest) -> Reply:
        job = await self.prepare_chat(req)
        worker = job.worker
        submitted = time.perf_counter()
        results, engine_seconds = await _gather(worker.streams(job.prompt, job.params, req.n or 1), submitted)
        choices = []
        for index, done in enumerate(results):
            message, finish = job.message(done.text, done.finish_reason)
            logprobs = chat_logprobs(done.logprobs) if job.params.logprobs is not None else None
            choices.append({"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish})
        body = {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": worker.info.id,
            "system_fingerprint": self.fingerprint(worker),
            "choices": choices,
            "usage": usage(
                results[0].prompt_tokens, sum(r.completion_tokens for r in results), results[0].cached_tokens
            ),
        }
        return Reply(body, engine_seconds)

    async def chat_stream(self, req: ChatCompletionRequest, on_usage: UsageHook | None = None) -> AsyncIterator[bytes]:
        job = await self.prepare_chat(req)
        worker = job.worker
        streams = [await _started(s) for s in worker.streams(job.prompt, job.params, req.n or 1)]
        base = chunk_base(worker.info.id, self.fingerprint(worker))
        return self._chat_events(base, streams, req.include_usage(), on_usage, job)

    async def _chat_events(
        self,
        base: dict[str, Any],
        streams: list[AsyncIterator[Chunk]],
        include_usage: bool,
        on_usage: UsageHook | None,
        job: ChatJob,
    ) -> AsyncIterator[bytes]:
        extra = {"usage": None} if include_usage else {}
        splitters = [job.splitter() for _ in streams]

        wants_logprobs = job.params.logprobs is not None

        def event(
            index: int, delta: dict[str, Any], finish: str | None, logprobs: tuple[TokenLogprob, ...] = ()
        ) -> bytes:
            shown = chat_logprobs(logprobs) if wants_logprobs and logprobs else None
            choice = {"index": index, "delta": delta, "logprobs": shown, "finish_reason": finish}
            return sse({**base, "choices": [choice], **extra})

        def pieces(index: int, content: str, calls: list[ToolCall]) -> Iterator[bytes]:
            if content:
                yield event(index, {"content": content}, None)
            for call in calls:
                for delta in tool_call_deltas(splitters[index], call):
                    yield event(index, {"tool_calls": [delta]}, None)

        for index in range(len(streams)):
            yield event(index, {"role": "assistant", "content": ""}, None)
        finals: list[Chunk] = []
        try:
            async for index, chunk in _merged(streams):
                splitter = splitters[index]
                if splitter is None:
                    if chunk.text or chunk.logprobs:
                        yield event(index, {"content": chunk.text}, None, chunk.logprobs)
                else:
                    for item in pieces(index, *splitter.feed(chunk.text)):
                        yield item
                if chunk.finish_reason is not None:
                    finals.append(chunk)
                    if splitter is not None:
                        for item in pieces(index, *splitter.finish()):
                            yield item
                    called = splitter is not None and bool(splitter.calls)
                    yield event(index, {}, job.finish(chunk.finish_reason, called=called))
        except Exception as exc:  # noqa: BLE001 - reported to the client as an error event
            yield _error_event(exc)
            yield sse("[DONE]")
            return
        finally:
            _report_usage(on_usage, finals, len(streams))
        if include_usage:
            yield sse({**base, "choices": [], "usage": _total_usage(finals, len(streams))})
        yield sse("[DONE]")

    # -- completions ---------------------------------------------------------------------------

    async def prepare_completion(self, req: CompletionRequest) -> tuple[Worker, list[tuple[Prompt, SamplingParams]]]:
        self._check_common(req.n, req.stop_list(), req.unsupported())
        worker = self.generator(req.model)
        prompts = req.prompts()
        if not prompts:
            raise APIError(400, "prompt must not be empty", param="prompt")
        if len(prompts) > self._settings.max_embedding_inputs:
            raise APIError(400, f"at most {self._settings.max_embedding_inputs} prompts are allowed", param="prompt")
        token_options = self._logprob_options(worker, req.logprobs, req.logit_bias)
        jobs = []
        for item in prompts:
            if req.suffix is not None:
                prefix = item if isinstance(item, str) else worker.backend.detokenize(item)
                tokens: list[int] = worker.backend.fill_in_middle(prefix, req.suffix)
            elif isinstance(item, str):
                tokens = await _off_loop_if_long(len(item), worker.backend.tokenize, item)
            else:
                tokens = _checked_ids(item, worker, "prompt")
            prompt = Prompt(tuple(tokens))
            params = SamplingParams(
                max_tokens=self._max_tokens(worker, prompt, req.max_tokens, "max_tokens"),
                temperature=DEFAULT_TEMPERATURE if req.temperature is None else req.temperature,
                top_p=DEFAULT_TOP_P if req.top_p is None else req.top_p,
                seed=req.seed,
                stop=tuple(req.stop_list()),
                presence_penalty=req.presence_penalty or 0.0,
                frequency_penalty=req.frequency_penalty or 0.0,
                **token_options,
            )
            jobs.append((prompt, params))
        return worker, jobs

    async def completion(self, req: CompletionRequest) -> Reply:
        worker, jobs = await self.prepare_completion(req)
        n = req.n or 1
        choices, prompt_tokens, completion_tokens, cached, engine = [], 0, 0, 0, 0.0
        for job_index, ((prompt, params), item) in enumerate(zip(jobs, req.prompts(), strict=True)):
            submitted = time.perf_counter()
            results, seconds = await _gather(worker.streams(prompt, params, n), submitted)
            for j, done in enumerate(results):
                prefix = _echo_text(worker, item) if req.echo else ""
                finish = finish_reason(done.finish_reason)
                logprobs = completion_logprobs(done.logprobs, 0) if req.logprobs is not None else None
                choices.append(
                    {
                        "text": prefix + done.text,
                        "index": job_index * n + j,
                        "logprobs": logprobs,
                        "finish_reason": finish,
                    }
                )
            prompt_tokens += results[0].prompt_tokens
            cached += results[0].cached_tokens
            completion_tokens += sum(r.completion_tokens for r in results)
            engine += seconds
        body = {
            "id": f"cmpl-{secrets.token_hex(12)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": worker.info.id,
            "system_fingerprint": self.fingerprint(worker),
            "choices": choices,
            "usage": usage(prompt_tokens, completion_tokens, cached),
        }
        return Reply(body, engine)

    async def completion_stream(
        self, req: CompletionRequest, on_usage: UsageHook | None = None
    ) -> AsyncIterator[bytes]:
        worker, jobs = await self.prepare_completion(req)
        first = [await _started(s) for s in worker.streams(*jobs[0], req.n or 1)]
        return self._completion_events(worker, jobs, first, req, on_usage)

    async def _completion_events(
        self,
        worker: Worker,
        jobs: list[tuple[Prompt, SamplingParams]],
        first: list[AsyncIterator[Chunk]],
        req: CompletionRequest,
        on_usage: UsageHook | None,
    ) -> AsyncIterator[bytes]:
        base = {
            "id": f"cmpl-{secrets.token_hex(12)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": worker.info.id,
            "system_fingerprint": self.fingerprint(worker),
        }
        extra = {"usage": None} if req.include_usage() else {}
        n = req.n or 1
        finals: list[Chunk] = []

        offsets: dict[int, int] = {}

        def event(index: int, text: str, finish: str | None, logprobs: tuple[TokenLogprob, ...] = ()) -> bytes:
            shown = None
            if req.logprobs is not None:
                shown = completion_logprobs(logprobs, offsets.get(index, 0))
                offsets[index] = offsets.get(index, 0) + len(text)
            choice = {"text": text, "index": index, "logprobs": shown, "finish_reason": finish}
            return sse({**base, "choices": [choice], **extra})

        try:
            for job_index, (job, item) in enumerate(zip(jobs, req.prompts(), strict=True)):
                try:
                    streams = first if job_index == 0 else worker.streams(*job, n)
                    if req.echo:
                        for j in range(n):
                            yield event(job_index * n + j, _echo_text(worker, item), None)
                    async for j, chunk in _merged(streams):
                        if chunk.text or chunk.logprobs:
                            yield event(job_index * n + j, chunk.text, None, chunk.logprobs)
                        if chunk.finish_reason is not None:
                            finals.append(chunk)
                            yield event(job_index * n + j, "", finish_reason(chunk.finish_reason))
                except Exception as exc:  # noqa: BLE001 - reported to the client as an error event
                    yield _error_event(exc)
                    yield sse("[DONE]")
                    return
        finally:
            _report_usage(on_usage, finals, n)
        if req.include_usage():
            yield sse({**base, "choices": [], "usage": _total_usage(finals, n)})
        yield sse("[DONE]")

    # -- embeddings ----------------------------------------------------------------------------

    async def embeddings(self, req: EmbeddingRequest) -> Reply:
        worker = self._models.get(req.model)
        if worker.info.kind is not ModelKind.EMBED:
            raise APIError(400, f"model {req.model!r} does not serve embeddings", param="model", code="unsupported")
        items = req.inputs()
        if not items or len(items) > self._settings.max_embedding_inputs:
            raise APIError(400, f"input must hold 1 to {self._settings.max_embedding_inputs} items", param="input")
        if any(not t for t in items):
            raise APIError(400, "input items must be non-empty strings or token lists", param="input")
        inputs = [t if isinstance(t, str) else tuple(_checked_ids(t, worker, "input")) for t in items]
        if req.dimensions is not None and req.dimensions != worker.info.embedding_dim:
            raise APIError(
                400, f"this model's embeddings have {worker.info.embedding_dim} dimensions", param="dimensions"
            )
        started = time.perf_counter()
        result = await worker.embed(inputs, truncate=req.truncate)
        elapsed = time.perf_counter() - started
        data = [
            {"object": "embedding", "index": i, "embedding": _encode_vector(v, req.encoding_format)}
            for i, v in enumerate(result.vectors)
        ]
        usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
        return Reply({"object": "list", "data": data, "model": worker.info.id, "usage": usage}, elapsed)

    # -- models --------------------------------------------------------------------------------

    def list_models(self) -> dict[str, Any]:
        loaded = [e for e in self._models.entries() if e.worker]
        loaded.sort(key=lambda e: e.source.id != self.default_model)  # the default first
        return {"object": "list", "data": [self._card(e.source, e.worker) for e in loaded]}

    def model(self, model_id: str) -> dict[str, Any]:
        worker = self._models.get(model_id)
        entry = self._models.entry(model_id)
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


def _checked_ids(ids: list[int], worker: Worker, param: str) -> list[int]:
    """Token ids a client sent: each must be one of the model's."""
    size = worker.info.vocab_size
    bad = next((t for t in ids if t >= size), None)
    if bad is not None:
        raise APIError(400, f"token id {bad} is not in the model's vocabulary (0 to {size - 1})", param=param)
    return ids


def _echo_text(worker: Worker, item: str | list[int]) -> str:
    return item if isinstance(item, str) else worker.backend.detokenize(item)


def _encode_vector(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode("ascii")
    return vector


async def _started(chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    """Wait for the first chunk so admission and load errors become HTTP errors, not broken streams."""
    iterator = aiter(chunks)
    first = await anext(iterator)

    async def chained() -> AsyncIterator[Chunk]:
        yield first
        async for chunk in iterator:
            yield chunk

    return chained()


async def _gather(streams: list[AsyncIterator[Chunk]], submitted: float) -> tuple[list[Completion], float]:
    """Every stream's completion, and the engine time: from submission to the last one's end."""
    results = list(await asyncio.gather(*(collect(s) for s in streams)))
    return results, time.perf_counter() - submitted


async def _merged(streams: list[AsyncIterator[Chunk]]) -> AsyncIterator[tuple[int, Chunk]]:
    """Chunks of several streams as they come, tagged with their stream's index; a timeout raises."""
    queue: asyncio.Queue[tuple[int, Chunk | Exception | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[Chunk]) -> None:
        try:
            async for chunk in stream:
                await queue.put((index, chunk))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer
            await queue.put((index, exc))
        finally:
            await queue.put((index, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    remaining = len(tasks)
    try:
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            elif item.finish_reason is FinishReason.TIMEOUT:
                raise RequestTimeoutError("generation exceeded the request time limit")
            else:
                yield index, item
    finally:
        for task in tasks:  # a client that left: closing each stream cancels its sequence
            task.cancel()


def _report_usage(on_usage: UsageHook | None, finals: list[Chunk], per_prompt: int) -> None:
    """Tell the rate limiter what a stream used, also when it ended early (finished choices only)."""
    if on_usage is not None and finals:
        on_usage(_total_usage(finals, per_prompt)["total_tokens"])


def _total_usage(finals: list[Chunk], per_prompt: int = 1) -> dict[str, Any]:
    """Usage over several choices: each prompt counted once (its cached tokens as the first choice that
    read it found them), every generated token counted."""
    prompts = sum(c.prompt_tokens for c in finals) // max(per_prompt, 1)
    cached = (
        min((c.cached_tokens for c in finals), default=0) if per_prompt > 1 else sum(c.cached_tokens for c in finals)
    )
    return usage(prompts, sum(c.completion_tokens for c in finals), cached)


def _error_event(exc: Exception) -> bytes:
    """An error met mid-stream, sent as a final event (the HTTP status is already on the wire)."""
    if isinstance(exc, MoltbotError):
        error = from_engine(exc)
    else:
        log.error("stream failed", exc_info=exc)
        error = APIError(500, "internal server error", type="server_error")
    return sse(envelope(error.message, error.type, error.param, error.code))
