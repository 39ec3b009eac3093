"""The one generation service: every entry point that generates text calls it (OpenAI's chat and
completions, session turns, and the APIs and applications built on them).

It owns what a generation means, apart from any API's shapes: a request's sampling with one set of
defaults (below), the limits a client cannot pass, the chat template (with tools, a prefilled tool call,
and, when asked, the oldest turns dropped to fit the context), the engine call and its admission,
timeouts, finish reasons, usage, tool-call parsing and log-probabilities. It knows no HTTP: errors are
the domain's (moltbot/errors.py and each layer's), mapped to an API's envelope at the edge.

Defaults, as OpenAI documents them: temperature 1, top_p 1, no penalties, no stop strings, one choice;
`max_tokens` unset is the room left in the context (capped by MOLTBOT_MAX_TOKENS_LIMIT). With
`truncate_history`, the history is cut so that the answer keeps `max_tokens` of room (unset: 512 tokens).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from moltbot.engine.backend import Worker
from moltbot.engine.errors import ContextLengthError, RequestTimeoutError, UnsupportedOperationError
from moltbot.engine.grammars import JSON_OBJECT_GRAMMAR, json_schema_grammar
from moltbot.engine.logprobs import TokenLogprob
from moltbot.engine.types import (
    ChatMessage,
    Chunk,
    Completion,
    Embeddings,
    EmbedInput,
    FinishReason,
    ModelKind,
    Prompt,
    Role,
    SamplingParams,
    ToolCall,
)
from moltbot.engine.worker import collect
from moltbot.errors import InvalidRequestError
from moltbot.models.manager import ModelManager
from moltbot.services.tools import OPEN as TOOL_OPEN
from moltbot.services.tools import StreamSplitter, Tool, ToolPlan, extract, parse_tools, plan
from moltbot.settings import Settings

DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
HISTORY_RESERVE = 512  # tokens an answer keeps when history is cut and max_tokens is unset
_LONG_TEXT = 16_384  # characters; longer prompts are rendered or tokenized off the event loop


# -- requests ------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Sampling:
    """What a client asked of the sampling; None is "the default" (above)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None  # engine default 40; 0 turns it off
    min_p: float | None = None  # engine default 0.05
    repeat_penalty: float | None = None  # engine default 1.0 (off)
    context_limit: int | None = None  # use at most this much of the model's context (Ollama's num_ctx)
    logprobs: int | None = None  # alternatives per token to report; None: no log-probabilities
    logit_bias: Mapping[str, float] | None = None  # token id (as text) -> bias
    n: int = 1
    max_tokens_param: str = "max_tokens"  # the field that set max_tokens, named in errors


@dataclass(slots=True, frozen=True)
class OutputFormat:
    kind: Literal["text", "json_object", "json_schema"]
    schema: Mapping[str, Any] | None = None


@dataclass(slots=True, frozen=True)
class ChatRequest:
    model: str
    messages: Sequence[ChatMessage]
    sampling: Sampling = Sampling()
    output: OutputFormat | None = None
    tools: Sequence[Mapping[str, Any]] = ()  # function declarations: {"type": "function", "function": {...}}
    tool_choice: Any = None  # "none" | "auto" | "required" | {"type": "function", "function": {"name": ...}}
    parallel_tool_calls: bool | None = None
    truncate_history: bool = False  # drop the oldest turns (never system messages or the last) to fit


@dataclass(slots=True, frozen=True)
class TextRequest:
    """Plain completion of one or more prompts (text or the model's token ids)."""

    model: str
    prompts: Sequence[str | Sequence[int]]
    sampling: Sampling = Sampling()
    suffix: str | None = None  # fill in the middle, between each prompt and this
    echo: bool = False


# -- results -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens found in the KV cache instead of computed

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Choice:
    index: int
    text: str  # chat: the content without tool-call markup; completions: the echoed prompt and the answer
    finish_reason: str | None  # "stop", "length", "tool_calls"
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: tuple[TokenLogprob, ...] | None = None  # None when not asked for
    echo: str = ""  # completions: the prompt text the answer follows, when echoed (part of `text`)
    stop_sequence: str = ""  # the request's stop string that ended the answer, if one did


@dataclass(slots=True)
class Generation:
    model: str
    fingerprint: str
    choices: list[Choice]
    usage: Usage
    engine_seconds: float
    dropped: int = 0  # messages of the history left out to fit the context


@dataclass(slots=True, frozen=True)
class TextDelta:
    index: int
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(slots=True, frozen=True)
class ToolCallDelta:
    index: int  # the choice
    position: int  # the call's place among the choice's calls
    call: ToolCall


@dataclass(slots=True, frozen=True)
class Finish:
    index: int
    reason: str | None
    stop_sequence: str = ""


Event = TextDelta | ToolCallDelta | Finish


@dataclass(slots=True)
class EmbeddingResult:
    model: str
    vectors: list[list[float]]
    prompt_tokens: int
    engine_seconds: float


def finish_reason(reason: FinishReason | None) -> str | None:
    if reason is None:
        return None
    return "length" if reason is FinishReason.LENGTH else "stop"


# -- a prepared chat -----------------------------------------------------------------------------


@dataclass(slots=True)
class ChatJob:
    """A chat request made ready for the engine: the prompt, its sampling, and how tools are read back."""

    worker: Worker
    prompt: Prompt
    params: SamplingParams
    n: int = 1
    tools: ToolPlan | None = None
    prefill: str = ""  # text the answer starts with (an opened tool call), part of the prompt
    dropped: int = 0

    def splitter(self) -> StreamSplitter | None:
        if self.tools is None:
            return None
        return StreamSplitter(self.tools.callable, prefilled=self.prefill, parallel=self.tools.parallel)

    def finish(self, reason: FinishReason | None, *, called: bool) -> str | None:
        if called and reason is FinishReason.STOP:
            return "tool_calls"
        return finish_reason(reason)

    def choice(self, index: int, done: Completion) -> Choice:
        """The choice of a whole answer."""
        logprobs = done.logprobs if self.params.logprobs is not None else None
        if self.tools is None:
            finish = finish_reason(done.finish_reason)
            return Choice(index, done.text, finish, logprobs=logprobs, stop_sequence=done.stop_sequence)
        content, calls = extract(self.prefill + done.text, self.tools.callable)
        if not calls:
            content = done.text  # no call after all: the answer as written (never the prefilled tag)
        if not self.tools.parallel:
            calls = calls[:1]
        finish = self.finish(done.finish_reason, called=bool(calls))
        return Choice(index, content, finish, calls, logprobs, stop_sequence=done.stop_sequence)


class GenerationStream:
    """A started generation: its events as they come (a timeout or engine error raises), each choice's
    content so far, and the usage of the choices finished so far (also when the stream ends early)."""

    def __init__(
        self, model: str, fingerprint: str, *, per_prompt: int = 1, dropped: int = 0, prompt_tokens: int = 0
    ) -> None:
        self.model = model
        self.prompt_tokens = prompt_tokens  # of the (first) prompt, known before any token is generated
        self.fingerprint = fingerprint
        self.dropped = dropped
        self.texts: dict[int, list[str]] = {}
        self._finals: list[Chunk] = []
        self._per_prompt = per_prompt
        self.choices = per_prompt  # of each prompt
        self._events: AsyncIterator[Event] | None = None

    def __aiter__(self) -> AsyncIterator[Event]:
        assert self._events is not None  # noqa: S101 - set by the service that made it
        return self._events

    def text(self, index: int = 0) -> str:
        return "".join(self.texts.get(index, ()))

    def usage(self) -> Usage:
        return total_usage(self._finals, self._per_prompt)

    def _said(self, index: int, text: str) -> None:
        self.texts.setdefault(index, []).append(text)

    def _finished(self, chunk: Chunk) -> None:
        self._finals.append(chunk)


def total_usage(finals: Sequence[Chunk | Completion], per_prompt: int = 1) -> Usage:
    """Usage over several choices: each prompt counted once (its cached tokens as the first choice that
    read it found them), every generated token counted."""
    prompts = sum(c.prompt_tokens for c in finals) // max(per_prompt, 1)
    cached = (
        min((c.cached_tokens for c in finals), default=0) if per_prompt > 1 else sum(c.cached_tokens for c in finals)
    )
    return Usage(prompts, sum(c.completion_tokens for c in finals), cached)


# -- the service ---------------------------------------------------------------------------------


class GenerationService:
    """Chat, completions and embeddings over the loaded models."""

    def __init__(self, models: ModelManager, settings: Settings, default_model: str = "") -> None:
        self.models = models
        self._settings = settings
        self.default_model = default_model

    def generator(self, model_id: str) -> Worker:
        """The worker of a loaded text-generation model (UnsupportedOperationError for an embedder)."""
        worker = self.models.get(model_id)
        if worker.info.kind is not ModelKind.GENERATE:
            raise UnsupportedOperationError(f"model {model_id!r} is an embedding model", param="model")
        return worker

    def fingerprint(self, worker: Worker) -> str:
        return self.models.fingerprint(worker)

    # -- checks and conversions ----------------------------------------------------------------

    def _check_sampling(self, sampling: Sampling) -> None:
        limits = self._settings
        if sampling.n > limits.max_n:
            raise InvalidRequestError(f"n must be at most {limits.max_n}", param="n")
        if len(sampling.stop) > limits.max_stop:
            raise InvalidRequestError(f"at most {limits.max_stop} stop sequences are allowed", param="stop")
        if any(len(s) > limits.max_stop_chars for s in sampling.stop):
            raise InvalidRequestError(f"stop sequences are limited to {limits.max_stop_chars} characters", param="stop")
        if sampling.max_tokens is not None and sampling.max_tokens > limits.max_tokens_limit:
            message = f"{sampling.max_tokens_param} must be at most {limits.max_tokens_limit}"
            raise InvalidRequestError(message, param=sampling.max_tokens_param)

    @staticmethod
    def _context(worker: Worker, sampling: Sampling) -> int:
        return min(worker.info.context_size, sampling.context_limit or worker.info.context_size)

    def _max_tokens(self, worker: Worker, prompt: Prompt, sampling: Sampling, prompt_param: str) -> int:
        context = self._context(worker, sampling)
        room = context - len(prompt.tokens)
        requested, param = sampling.max_tokens, sampling.max_tokens_param
        if room <= 0:
            raise ContextLengthError(
                f"the prompt has {len(prompt.tokens)} tokens; the context is {context}",
                param=prompt_param if requested is None else param,
            )
        if requested is None:
            return min(room, self._settings.max_tokens_limit)
        if requested > room:
            raise ContextLengthError(
                f"{param} ({requested}) exceeds the context left after the prompt ({room} tokens)", param=param
            )
        return requested

    @staticmethod
    def _grammar(output: OutputFormat | None) -> str | None:
        if output is None or output.kind == "text":
            return None
        if output.kind == "json_object":
            return JSON_OBJECT_GRAMMAR
        if output.schema is None:
            raise InvalidRequestError("response_format.json_schema is required", param="response_format.json_schema")
        return json_schema_grammar(dict(output.schema))

    def _token_options(self, worker: Worker, sampling: Sampling) -> dict[str, Any]:
        """SamplingParams' logprobs and logit_bias, checked against the model."""
        if (sampling.logprobs is not None or sampling.logit_bias) and not worker.info.token_level:
            raise InvalidRequestError(f"model {worker.info.id!r} reports no token log-probabilities", param="logprobs")
        pairs: list[tuple[int, float]] = []
        for key, value in (sampling.logit_bias or {}).items():
            if not key.isdigit() or int(key) >= worker.info.vocab_size:
                raise InvalidRequestError(f"logit_bias key {key!r} is not a token id of this model", param="logit_bias")
            pairs.append((int(key), float(value)))
        return {"logprobs": sampling.logprobs, "logit_bias": tuple(pairs)}

    def _params(self, worker: Worker, prompt: Prompt, sampling: Sampling, prompt_param: str) -> SamplingParams:
        """The one conversion from a request's sampling to the engine's, with the defaults above."""
        engine: dict[str, Any] = {
            name: value
            for name, value in (
                ("top_k", sampling.top_k),
                ("min_p", sampling.min_p),
                ("repeat_penalty", sampling.repeat_penalty),
            )
            if value is not None
        }
        return SamplingParams(
            max_tokens=self._max_tokens(worker, prompt, sampling, prompt_param),
            temperature=DEFAULT_TEMPERATURE if sampling.temperature is None else sampling.temperature,
            top_p=DEFAULT_TOP_P if sampling.top_p is None else sampling.top_p,
            seed=sampling.seed,
            stop=sampling.stop,
            presence_penalty=sampling.presence_penalty or 0.0,
            frequency_penalty=sampling.frequency_penalty or 0.0,
            **engine,
            **self._token_options(worker, sampling),
        )

    def _checked_messages(self, messages: Sequence[ChatMessage]) -> None:
        if len(messages) > self._settings.max_messages:
            raise InvalidRequestError(f"at most {self._settings.max_messages} messages are allowed", param="messages")
        calls: set[str] = set()
        for i, message in enumerate(messages):
            calls.update(c.id for c in message.tool_calls)
            if message.role is Role.TOOL and message.tool_call_id not in calls:
                where = f"messages.{i}.tool_call_id"
                raise InvalidRequestError("a tool message answers no earlier assistant tool call", param=where)

    def _tool_plan(self, req: ChatRequest, worker: Worker) -> tuple[tuple[Tool, ...], ToolPlan | None]:
        tools = parse_tools([dict(t) for t in req.tools])
        tool_plan = plan(tools, req.tool_choice, req.parallel_tool_calls)
        if tools and not worker.backend.supports_tools:
            message = f"model {worker.info.id!r} was not made to call tools (its chat template has none)"
            raise UnsupportedOperationError(message, param="tools")
        if tool_plan is not None and req.output is not None and req.output.kind != "text":
            raise InvalidRequestError("response_format cannot be combined with tools here", param="response_format")
        return tools, tool_plan

    # -- chat ----------------------------------------------------------------------------------

    async def prepare_chat(self, req: ChatRequest) -> ChatJob:
        """Check a chat request and render its prompt; nothing is submitted yet."""
        self._check_sampling(req.sampling)
        worker = self.generator(req.model)
        self._checked_messages(req.messages)
        tools, tool_plan = self._tool_plan(req, worker)
        shown = [t.template_entry() for t in tools] if tool_plan is not None else None
        prefill = TOOL_OPEN + "\n" if tool_plan is not None and tool_plan.forced else ""
        render = functools.partial(worker.backend.render_chat, tools=shown, prefill=prefill)
        size = sum(len(m.content) for m in req.messages)
        if req.truncate_history:
            reserve = req.sampling.max_tokens or min(self._settings.max_tokens_limit, HISTORY_RESERVE)
            fitted = functools.partial(fit, render, req.messages, reserve, self._context(worker, req.sampling))
            prompt, dropped = await _off_loop_if_long(size, fitted)
        else:
            prompt, dropped = await _off_loop_if_long(size, render, req.messages), 0
        params = replace(self._params(worker, prompt, req.sampling, "messages"), grammar=self._grammar(req.output))
        if tool_plan is not None:
            grammar = tool_plan.grammar()
            params = replace(params, tool_trigger=TOOL_OPEN, tool_grammar=grammar, tool_active=tool_plan.forced)
        return ChatJob(worker, prompt, params, req.sampling.n, tool_plan, prefill, dropped)

    async def chat(self, req: ChatRequest) -> Generation:
        """A whole answer (each of `n` choices)."""
        job = await self.prepare_chat(req)
        submitted = time.perf_counter()
        results = list(await asyncio.gather(*(collect(s) for s in job.worker.streams(job.prompt, job.params, job.n))))
        seconds = time.perf_counter() - submitted
        choices = [job.choice(i, done) for i, done in enumerate(results)]
        model, fingerprint = job.worker.info.id, self.fingerprint(job.worker)
        return Generation(model, fingerprint, choices, total_usage(results, job.n), seconds, job.dropped)

    async def chat_stream(self, req: ChatRequest) -> GenerationStream:
        return await self.start(await self.prepare_chat(req))

    async def start(self, job: ChatJob) -> GenerationStream:
        """Submit a prepared chat; admission errors raise here, before any event."""
        streams = [await _started(s) for s in job.worker.streams(job.prompt, job.params, job.n)]
        stream = GenerationStream(
            job.worker.info.id,
            self.fingerprint(job.worker),
            per_prompt=job.n,
            dropped=job.dropped,
            prompt_tokens=len(job.prompt.tokens),
        )
        stream._events = _chat_events(job, streams, stream)  # noqa: SLF001 - its maker
        return stream

    # -- completions ---------------------------------------------------------------------------

    async def _prepare_text(self, req: TextRequest) -> tuple[Worker, list[tuple[Prompt, SamplingParams]]]:
        self._check_sampling(req.sampling)
        worker = self.generator(req.model)
        if not req.prompts:
            raise InvalidRequestError("prompt must not be empty", param="prompt")
        if len(req.prompts) > self._settings.max_embedding_inputs:
            most = self._settings.max_embedding_inputs
            raise InvalidRequestError(f"at most {most} prompts are allowed", param="prompt")
        jobs = []
        for item in req.prompts:
            if req.suffix is not None:
                prefix = item if isinstance(item, str) else worker.backend.detokenize(item)
                tokens: Sequence[int] = worker.backend.fill_in_middle(prefix, req.suffix)
            elif isinstance(item, str):
                tokens = await _off_loop_if_long(len(item), worker.backend.tokenize, item)
            else:
                tokens = checked_ids(item, worker, "prompt")
            prompt = Prompt(tuple(tokens))
            jobs.append((prompt, self._params(worker, prompt, req.sampling, "prompt")))
        return worker, jobs

    async def complete(self, req: TextRequest) -> Generation:
        worker, jobs = await self._prepare_text(req)
        n = req.sampling.n
        choices: list[Choice] = []
        finals: list[Completion] = []
        seconds = 0.0
        for job_index, ((prompt, params), item) in enumerate(zip(jobs, req.prompts, strict=True)):
            submitted = time.perf_counter()
            results = list(await asyncio.gather(*(collect(s) for s in worker.streams(prompt, params, n))))
            seconds += time.perf_counter() - submitted
            echo = _echo_text(worker, item) if req.echo else ""
            for j, done in enumerate(results):
                logprobs = done.logprobs if params.logprobs is not None else None
                finish = finish_reason(done.finish_reason)
                choices.append(Choice(job_index * n + j, echo + done.text, finish, logprobs=logprobs, echo=echo))
            finals.extend(results)
        usage = total_usage(finals, n)
        return Generation(worker.info.id, self.fingerprint(worker), choices, usage, seconds)

    async def complete_stream(self, req: TextRequest) -> GenerationStream:
        worker, jobs = await self._prepare_text(req)
        first = [await _started(s) for s in worker.streams(*jobs[0], req.sampling.n)]
        stream = GenerationStream(
            worker.info.id, self.fingerprint(worker), per_prompt=req.sampling.n, prompt_tokens=len(jobs[0][0].tokens)
        )
        stream._events = _text_events(worker, jobs, first, req, stream)  # noqa: SLF001 - its maker
        return stream

    # -- embeddings ----------------------------------------------------------------------------

    async def embed(
        self, model: str, items: Sequence[str | Sequence[int]], *, truncate: bool = False, dimensions: int | None = None
    ) -> EmbeddingResult:
        worker = self.models.get(model)
        if worker.info.kind is not ModelKind.EMBED:
            raise UnsupportedOperationError(f"model {model!r} does not serve embeddings", param="model")
        if not items or len(items) > self._settings.max_embedding_inputs:
            most = self._settings.max_embedding_inputs
            raise InvalidRequestError(f"input must hold 1 to {most} items", param="input")
        if any(not t for t in items):
            raise InvalidRequestError("input items must be non-empty strings or token lists", param="input")
        inputs: list[EmbedInput] = [t if isinstance(t, str) else tuple(checked_ids(t, worker, "input")) for t in items]
        if dimensions is not None and dimensions != worker.info.embedding_dim:
            message = f"this model's embeddings have {worker.info.embedding_dim} dimensions"
            raise InvalidRequestError(message, param="dimensions")
        started = time.perf_counter()
        result: Embeddings = await worker.embed(inputs, truncate=truncate)
        seconds = time.perf_counter() - started
        return EmbeddingResult(worker.info.id, [list(v) for v in result.vectors], result.prompt_tokens, seconds)


# -- helpers -------------------------------------------------------------------------------------


def fit(
    render: Callable[[Sequence[ChatMessage]], Prompt],
    messages: Sequence[ChatMessage],
    reserve: int,
    context_size: int,
) -> tuple[Prompt, int]:
    """The prompt of `messages` with whole turns of the history dropped, oldest first, until it and
    `reserve` tokens fit the context; and how many messages were dropped.

    Leading system messages and the last message are always kept; a turn is a user message and what
    follows it up to the next user message. The same history always renders to the same prompt prefix,
    so the engine's KV cache finds earlier turns already computed.
    """
    head_size = next((i for i, m in enumerate(messages) if m.role is not Role.SYSTEM), len(messages))
    head, middle, last = list(messages[:head_size]), list(messages[head_size:-1]), list(messages[-1:])
    if head_size == len(messages):
        head, middle, last = list(messages), [], []
    turns: list[list[ChatMessage]] = []
    for message in middle:
        if message.role is Role.USER or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    dropped = 0
    while True:
        prompt = render([*head, *(m for turn in turns for m in turn), *last])
        if len(prompt.tokens) + reserve <= context_size:
            return prompt, dropped
        if not turns:
            raise ContextLengthError(
                f"the system prompt and the last message ({len(prompt.tokens)} tokens) with max_tokens {reserve} "
                f"do not fit the model's context of {context_size} tokens",
                param="messages",
            )
        dropped += len(turns.pop(0))


def checked_ids(ids: Sequence[int], worker: Worker, param: str) -> list[int]:
    """Token ids a client sent: each must be one of the model's."""
    size = worker.info.vocab_size
    bad = next((t for t in ids if t >= size), None)
    if bad is not None:
        raise InvalidRequestError(f"token id {bad} is not in the model's vocabulary (0 to {size - 1})", param=param)
    return list(ids)


def _echo_text(worker: Worker, item: str | Sequence[int]) -> str:
    return item if isinstance(item, str) else worker.backend.detokenize(item)


async def _off_loop_if_long(size: int, fn: Any, *args: Any) -> Any:
    if size > _LONG_TEXT:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


async def _started(chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    """Wait for the first chunk so that admission and load errors raise before any event."""
    iterator = aiter(chunks)
    first = await anext(iterator)

    async def chained() -> AsyncIterator[Chunk]:
        yield first
        async for chunk in iterator:
            yield chunk

    return chained()


async def merged(streams: Sequence[AsyncIterator[Chunk]]) -> AsyncIterator[tuple[int, Chunk]]:
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
        for task in tasks:  # a consumer that left: closing each stream cancels its sequence
            task.cancel()


async def _chat_events(
    job: ChatJob, streams: list[AsyncIterator[Chunk]], out: GenerationStream
) -> AsyncIterator[Event]:
    splitters = [job.splitter() for _ in streams]
    positions: list[list[ToolCall]] = [[] for _ in streams]
    wants_logprobs = job.params.logprobs is not None

    def pieces(index: int, content: str, calls: list[ToolCall]) -> list[Event]:
        events: list[Event] = []
        if content:
            out._said(index, content)  # noqa: SLF001
            events.append(TextDelta(index, content))
        for call in calls:
            positions[index].append(call)
            events.append(ToolCallDelta(index, len(positions[index]) - 1, call))
        return events

    async for index, chunk in merged(streams):
        splitter = splitters[index]
        if splitter is None:
            if chunk.text or (wants_logprobs and chunk.logprobs):
                out._said(index, chunk.text)  # noqa: SLF001
                yield TextDelta(index, chunk.text, chunk.logprobs if wants_logprobs else ())
        else:
            for event in pieces(index, *splitter.feed(chunk.text)):
                yield event
        if chunk.finish_reason is not None:
            out._finished(chunk)  # noqa: SLF001
            if splitter is not None:
                for event in pieces(index, *splitter.finish()):
                    yield event
            finish = job.finish(chunk.finish_reason, called=bool(positions[index]))
            yield Finish(index, finish, chunk.stop_sequence)


async def _text_events(
    worker: Worker,
    jobs: list[tuple[Prompt, SamplingParams]],
    first: list[AsyncIterator[Chunk]],
    req: TextRequest,
    out: GenerationStream,
) -> AsyncIterator[Event]:
    n = req.sampling.n
    for job_index, (job, item) in enumerate(zip(jobs, req.prompts, strict=True)):
        streams = first if job_index == 0 else worker.streams(*job, n)
        if req.echo:
            for j in range(n):
                yield TextDelta(job_index * n + j, _echo_text(worker, item))
        async for j, chunk in merged(streams):
            if chunk.text or chunk.logprobs:
                out._said(job_index * n + j, chunk.text)  # noqa: SLF001
                yield TextDelta(job_index * n + j, chunk.text, chunk.logprobs)
            if chunk.finish_reason is not None:
                out._finished(chunk)  # noqa: SLF001
                yield Finish(job_index * n + j, finish_reason(chunk.finish_reason), chunk.stop_sequence)
