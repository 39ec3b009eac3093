"""Ollama's API (/api/*) over the generation service, in Ollama's shapes: NDJSON streams by default,
durations in nanoseconds, errors as {"error": message}.

Sampling follows Ollama's documented defaults where a request leaves them unset (temperature 0.8,
top_k 40, top_p 0.9, min_p 0, repeat_penalty 1.1); `num_predict` -1 or -2 is the room left in the
context; `num_ctx` caps the context a request may use (a larger value is the model's loaded context:
models are loaded once, with the context the server's settings give them). `keep_alive` is accepted and
has no effect: every configured model stays loaded. /api/pull takes packages from OCI registries
(`host/repository:tag`), never from ollama.com. Not here: /api/create, /api/copy, /api/push (the
model repository is managed with `moltbot models` and the admin API).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from moltbot import __version__
from moltbot.engine.backend import Worker
from moltbot.engine.types import ChatMessage, ModelKind, Role, ToolCall
from moltbot.errors import InvalidRequestError
from moltbot.gateway.auth import charge_tokens
from moltbot.gateway.deps import CurrentSettings, Generation, Models
from moltbot.gateway.disconnect import unless_disconnected
from moltbot.gateway.errors import APIError, error_body, stream_error
from moltbot.gateway.observe import ENGINE_SECONDS_KEY
from moltbot.models.bundled import BY_ID as BUNDLED
from moltbot.models.manager import ModelManager
from moltbot.models.registry import Reference, RegistryAuth, Transfer, pull
from moltbot.models.store import ModelStore
from moltbot.services.generation import (
    ChatRequest,
    Finish,
    GenerationStream,
    OutputFormat,
    Sampling,
    TextDelta,
    TextRequest,
    ToolCallDelta,
)
from moltbot.services.tools import call_id
from moltbot.settings import Settings

router = APIRouter()
# The Ollama API level these routes implement (clients compare it to decide what to send).
OLLAMA_API_VERSION = "0.12.0"
DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.1}
_NDJSON = "application/x-ndjson"
Frame = Callable[[str, list[ToolCall], dict[str, Any] | None], dict[str, Any]]  # one reply object
_ROLES = {"system": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT, "tool": Role.TOOL}
_LAX = ConfigDict(extra="ignore")


# -- request bodies ------------------------------------------------------------------------------


class Options(BaseModel):
    """The options this server honours (others, such as num_thread or mirostat, are ignored as Ollama
    ignores options a model does not use)."""

    model_config = _LAX
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_k: Annotated[int, Field(ge=0, le=1000)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    num_predict: Annotated[int, Field(ge=-2)] | None = None
    num_ctx: Annotated[int, Field(ge=1)] | None = None
    repeat_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None


class FunctionCall(BaseModel):
    model_config = _LAX
    name: str = Field(max_length=256)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCallIn(BaseModel):
    model_config = _LAX
    function: FunctionCall


class Message(BaseModel):
    model_config = _LAX
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[ToolCallIn] | None = Field(default=None, max_length=128)
    tool_name: str | None = None
    thinking: str | None = None


Format = Literal["", "json"] | dict[str, Any] | None
KeepAlive = str | float | None


class _Generating(BaseModel):
    model_config = _LAX
    model: str = Field(min_length=1, max_length=256)
    format: Format = None
    options: Options | None = None
    stream: bool = True
    keep_alive: KeepAlive = None
    think: bool | str | None = None


class ChatBody(_Generating):
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)


class GenerateBody(_Generating):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    raw: bool = False
    images: list[str] | None = None
    context: list[int] | None = None


class EmbedBody(BaseModel):
    model_config = _LAX
    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] = Field(min_length=1)
    truncate: bool = True
    dimensions: Annotated[int, Field(ge=1)] | None = None
    options: Options | None = None
    keep_alive: KeepAlive = None


class EmbeddingsBody(BaseModel):
    model_config = _LAX
    model: str = Field(min_length=1, max_length=256)
    prompt: str = Field(min_length=1)
    options: Options | None = None
    keep_alive: KeepAlive = None


class ShowBody(BaseModel):
    model_config = _LAX
    model: str | None = Field(default=None, max_length=256)
    name: str | None = Field(default=None, max_length=256)  # the older field
    verbose: bool = False


# -- conversions ---------------------------------------------------------------------------------


def _refuse_features(body: _Generating, images: bool) -> None:
    if body.think not in (None, False, "", "false"):
        raise APIError(400, f"{body.model!r} does not support thinking", param="think")
    if images:
        raise APIError(400, "this server has no vision model: images are not accepted", param="images")


def _sampling(options: Options | None) -> Sampling:
    o = options or Options()
    if o.num_predict == 0:
        raise APIError(400, "num_predict must be -1, -2 or at least 1", param="options.num_predict")
    stop = () if o.stop is None else (o.stop,) if isinstance(o.stop, str) else tuple(o.stop)
    return Sampling(
        max_tokens=o.num_predict if o.num_predict and o.num_predict > 0 else None,
        temperature=DEFAULTS["temperature"] if o.temperature is None else o.temperature,
        top_p=DEFAULTS["top_p"] if o.top_p is None else o.top_p,
        top_k=int(DEFAULTS["top_k"]) if o.top_k is None else o.top_k,
        min_p=DEFAULTS["min_p"] if o.min_p is None else o.min_p,
        repeat_penalty=DEFAULTS["repeat_penalty"] if o.repeat_penalty is None else o.repeat_penalty,
        seed=o.seed,
        stop=stop,
        presence_penalty=o.presence_penalty,
        frequency_penalty=o.frequency_penalty,
        context_limit=o.num_ctx,
        max_tokens_param="options.num_predict",
    )


def _output(fmt: Format) -> OutputFormat | None:
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return OutputFormat("json_object")
    if isinstance(fmt, dict):
        return OutputFormat("json_schema", fmt)
    raise APIError(400, 'format is "json" or a JSON schema', param="format")


def _messages(messages: Sequence[Message]) -> list[ChatMessage]:
    """Ollama's history as the engine's: calls get ids, and each tool message answers the earliest
    unanswered call (of its tool_name, when it names one)."""
    out: list[ChatMessage] = []
    open_calls: list[ToolCall] = []
    for i, m in enumerate(messages):
        calls = tuple(
            ToolCall(call_id(), c.function.name, json.dumps(c.function.arguments, ensure_ascii=False))
            for c in m.tool_calls or ()
        )
        open_calls.extend(calls)
        answered = ""
        if m.role == "tool":
            match = next((c for c in open_calls if not m.tool_name or c.name == m.tool_name), None)
            if match is None:
                raise InvalidRequestError("a tool message answers no earlier tool call", param=f"messages.{i}")
            open_calls.remove(match)
            answered = match.id
        out.append(ChatMessage(_ROLES[m.role], m.content, calls, answered, m.tool_name or ""))
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _call_json(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments)
    except ValueError:
        arguments = {}
    return {"function": {"name": call.name, "arguments": arguments if isinstance(arguments, dict) else {}}}


def _lines(items: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async def encode() -> AsyncIterator[bytes]:
        async for item in items:
            yield json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    return encode()


class _Timing:
    """Ollama's durations: the total, prompt evaluation (to the first token), generation (after it)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None

    def token(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def final(self, stream: GenerationStream, reason: str | None) -> dict[str, Any]:
        end = time.perf_counter()
        first = self.first or end
        used = stream.usage()
        return {
            "done": True,
            "done_reason": reason or "stop",
            "total_duration": _ns(end - self.start),
            "load_duration": 0,  # models are loaded at start, never per request
            "prompt_eval_count": used.prompt_tokens,
            "prompt_eval_duration": _ns(first - self.start),
            "eval_count": used.completion_tokens,
            "eval_duration": _ns(end - first),
        }


async def _pieces(
    stream: GenerationStream, timing: _Timing
) -> AsyncIterator[tuple[str, list[ToolCall], dict[str, Any] | None]]:
    """Each event as (text, calls, final fields or None); final fields come last, once."""
    reason: str | None = None
    async for event in stream:
        if isinstance(event, TextDelta) and event.text:
            timing.token()
            yield event.text, [], None
        elif isinstance(event, ToolCallDelta):
            timing.token()
            yield "", [event.call], None
        elif isinstance(event, Finish):
            reason = event.reason
    done_reason = "stop" if reason == "tool_calls" else reason
    yield "", [], timing.final(stream, done_reason)


def _error_line(exc: Exception, path: str) -> dict[str, Any]:
    return error_body(path, stream_error(exc))


async def _answer(
    request: Request,
    stream: GenerationStream,
    streaming: bool,
    frame: Frame,
    timing: _Timing,
) -> Response:
    """Stream NDJSON objects, or gather them into one (`frame(text, calls, final)` shapes each)."""
    state = request.scope["state"]
    if streaming:

        async def items() -> AsyncIterator[dict[str, Any]]:
            try:
                async for text, calls, final in _pieces(stream, timing):
                    yield frame(text, calls, final)
            except Exception as exc:  # noqa: BLE001 - an error mid-stream is the stream's last line
                yield _error_line(exc, request.url.path)
            finally:
                used = stream.usage().total_tokens
                if used:
                    charge_tokens(state, used)

        return StreamingResponse(_lines(items()), media_type=_NDJSON)

    async def gather() -> dict[str, Any]:
        texts: list[str] = []
        calls: list[ToolCall] = []
        last: dict[str, Any] = {}
        async for text, more, final in _pieces(stream, timing):
            texts.append(text)
            calls.extend(more)
            last = final or last
        return frame("".join(texts), calls, last)

    reply = await unless_disconnected(request, gather())
    state[ENGINE_SECONDS_KEY] = reply.get("total_duration", 0) / 1e9
    charge_tokens(state, stream.usage().total_tokens)
    return JSONResponse(reply)


# -- generation ----------------------------------------------------------------------------------


@router.post("/api/chat")
async def chat(body: ChatBody, request: Request, generation: Generation) -> Response:
    _refuse_features(body, any(m.images for m in body.messages))
    if not body.messages:  # Ollama's way to load a model: answer that it is loaded
        generation.generator(body.model)
        loaded = {"message": {"role": "assistant", "content": ""}, "done_reason": "load", "done": True}
        return JSONResponse({"model": body.model, "created_at": _now(), **loaded})
    req = ChatRequest(
        model=body.model,
        messages=_messages(body.messages),
        sampling=_sampling(body.options),
        output=_output(body.format),
        tools=body.tools or (),
    )
    timing = _Timing()
    stream = await generation.chat_stream(req)

    def frame(text: str, calls: list[ToolCall], final: dict[str, Any] | None) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = [_call_json(c) for c in calls]
        return {"model": stream.model, "created_at": _now(), "message": message, **(final or {"done": False})}

    return await _answer(request, stream, body.stream, frame, timing)


@router.post("/api/generate")
async def generate(body: GenerateBody, request: Request, generation: Generation) -> Response:
    _refuse_features(body, bool(body.images))
    if body.template:
        message = "template overrides are not supported: the model's own template is used"
        raise APIError(400, message, param="template")
    if body.context:
        message = "context (deprecated) is not supported: send the conversation to /api/chat"
        raise APIError(400, message, param="context")
    worker = generation.generator(body.model)
    if not body.prompt and body.suffix is None:
        loaded = {"response": "", "done_reason": "load", "done": True}
        return JSONResponse({"model": body.model, "created_at": _now(), **loaded})
    timing = _Timing()
    sampling = _sampling(body.options)
    if body.raw or body.suffix is not None or not worker.info.has_chat_template:
        prompt = body.prompt if body.raw or not body.system else f"{body.system}\n\n{body.prompt}"
        text_req = TextRequest(body.model, [prompt], sampling, suffix=body.suffix)
        if body.format not in (None, ""):
            raise APIError(400, "format needs a chat model without raw or suffix", param="format")
        stream = await generation.complete_stream(text_req)
    else:
        messages = [ChatMessage(Role.SYSTEM, body.system)] if body.system else []
        messages.append(ChatMessage(Role.USER, body.prompt))
        req = ChatRequest(body.model, messages, sampling, output=_output(body.format))
        stream = await generation.chat_stream(req)

    def frame(text: str, calls: list[ToolCall], final: dict[str, Any] | None) -> dict[str, Any]:
        return {"model": stream.model, "created_at": _now(), "response": text, **(final or {"done": False})}

    return await _answer(request, stream, body.stream, frame, timing)


# -- embeddings ----------------------------------------------------------------------------------


@router.post("/api/embed")
async def embed(body: EmbedBody, request: Request, generation: Generation) -> JSONResponse:
    started = time.perf_counter()
    items: list[str | Sequence[int]] = [body.input] if isinstance(body.input, str) else list(body.input)
    work = generation.embed(body.model, items, truncate=body.truncate, dimensions=body.dimensions)
    result = await unless_disconnected(request, work)
    request.scope["state"][ENGINE_SECONDS_KEY] = result.engine_seconds
    charge_tokens(request.scope["state"], result.prompt_tokens)
    return JSONResponse(
        {
            "model": result.model,
            "embeddings": result.vectors,
            "total_duration": _ns(time.perf_counter() - started),
            "load_duration": 0,
            "prompt_eval_count": result.prompt_tokens,
        }
    )


@router.post("/api/embeddings")
async def embeddings(body: EmbeddingsBody, request: Request, generation: Generation) -> JSONResponse:
    """The older, single-text form: {"embedding": [...]}."""
    result = await unless_disconnected(request, generation.embed(body.model, [body.prompt], truncate=True))
    request.scope["state"][ENGINE_SECONDS_KEY] = result.engine_seconds
    charge_tokens(request.scope["state"], result.prompt_tokens)
    return JSONResponse({"embedding": result.vectors[0]})


# -- models --------------------------------------------------------------------------------------


def _details(worker: Worker | None, fmt: str) -> dict[str, Any]:
    meta = worker.info.metadata if worker is not None else {}
    family = meta.get("general.architecture", "bert" if fmt == "hf-bert" else "")
    count = worker.info.parameter_count if worker is not None else 0
    return {
        "parent_model": "",
        "format": "gguf" if fmt == "gguf" else "safetensors",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": meta.get("general.size_label") or (_parameter_size(count) if count else ""),
        "quantization_level": _quantization(meta.get("general.file_type", "")),
    }


def _parameter_size(count: int) -> str:
    return f"{count / 1e9:.1f}B" if count >= 1e9 else f"{count / 1e6:.0f}M"


# llama.cpp's LLAMA_FTYPE values, as Ollama names the quantization.
_FILE_TYPES = {
    "0": "F32", "1": "F16", "2": "Q4_0", "3": "Q4_1", "7": "Q8_0", "8": "Q5_0", "9": "Q5_1", "10": "Q2_K",
    "11": "Q3_K_S", "12": "Q3_K_M", "13": "Q3_K_L", "14": "Q4_K_S", "15": "Q4_K_M", "16": "Q5_K_S",
    "17": "Q5_K_M", "18": "Q6_K", "32": "BF16",
}  # fmt: skip


def _quantization(file_type: str) -> str:
    return _FILE_TYPES.get(file_type, "")


def _listing(models: ModelManager) -> list[dict[str, Any]]:
    rows = []
    for entry in models.entries():
        source = entry.source
        modified = datetime.fromtimestamp(entry.worker.info.created if entry.worker else 0, UTC)
        rows.append(
            {
                "name": source.id,
                "model": source.id,
                "modified_at": modified.isoformat().replace("+00:00", "Z"),
                "size": source.size_bytes,
                "digest": source.digest.removeprefix("sha256:"),
                "details": _details(entry.worker, source.format.value),
                "_worker": entry.worker,
            }
        )
    return rows


@router.get("/api/tags")
async def tags(models: Models) -> dict[str, Any]:
    """The models this server serves or is loading."""
    rows = _listing(models)
    return {"models": [{k: v for k, v in row.items() if k != "_worker"} for row in rows]}


@router.get("/api/ps")
async def running(models: Models) -> dict[str, Any]:
    rows = []
    for row in _listing(models):
        worker = row.pop("_worker")
        if worker is None:
            continue
        row.pop("modified_at")
        rows.append(
            {
                **row,
                "expires_at": "0001-01-01T00:00:00Z",  # never unloaded for idleness (keep_alive has no effect)
                "size_vram": 0,
                "context_length": worker.info.context_size,
            }
        )
    return {"models": rows}


@router.post("/api/show")
async def show(body: ShowBody, generation: Generation) -> dict[str, Any]:
    name = body.model or body.name
    if not name:
        raise APIError(400, "model is required", param="model")
    worker = generation.models.get(name)
    entry = generation.models.entry(name)
    info = worker.info
    fmt = entry.source.format.value if entry is not None else "gguf"
    capabilities = ["embedding"] if info.kind is ModelKind.EMBED else ["completion"]
    if info.kind is ModelKind.GENERATE and worker.backend.supports_tools:
        capabilities.append("tools")
    if info.kind is ModelKind.GENERATE and _has_fim(worker):
        capabilities.append("insert")
    model_info: dict[str, Any] = {key: _typed(value) for key, value in info.metadata.items()}
    model_info.setdefault("general.parameter_count", info.parameter_count)
    arch = info.metadata.get("general.architecture", "")
    if arch:
        model_info.setdefault(f"{arch}.context_length", info.context_size)

    shipped = BUNDLED.get(name)
    parameters = "\n".join(f"{k:<15} {v}" for k, v in DEFAULTS.items())
    return {
        "license": shipped.license if shipped else info.metadata.get("general.license", ""),
        "modelfile": f"# Served by Moltbot {__version__}\nFROM {name}\nPARAMETER num_ctx {info.context_size}\n",
        "parameters": f"{parameters}\nnum_ctx         {info.context_size}",
        "template": info.chat_template,
        "details": _details(worker, fmt),
        "model_info": model_info,
        "capabilities": capabilities,
        "modified_at": datetime.fromtimestamp(info.created, UTC).isoformat().replace("+00:00", "Z"),
    }


def _has_fim(worker: Worker) -> bool:
    try:
        worker.backend.fill_in_middle("", "")
    except Exception:  # noqa: BLE001 - no FIM tokens (or no tokenizer for it)
        return False
    return True


def _typed(value: str) -> Any:
    """GGUF metadata values come as strings: numbers back as numbers."""
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value else number


@router.get("/api/version")
async def version() -> dict[str, Any]:
    return {"version": OLLAMA_API_VERSION, "moltbot_version": __version__}


@router.head("/", include_in_schema=False)
async def alive() -> Response:
    """Ollama's clients probe `HEAD /` to see that the server is up."""
    return Response(status_code=200)


# -- the model repository ------------------------------------------------------------------------


class PullBody(BaseModel):
    model_config = _LAX
    model: str | None = Field(default=None, max_length=512)
    name: str | None = Field(default=None, max_length=512)  # the older field
    insecure: bool = False
    stream: bool = True


class DeleteBody(BaseModel):
    model_config = _LAX
    model: str | None = Field(default=None, max_length=256)
    name: str | None = Field(default=None, max_length=256)


def _registry_auth(settings: Settings, reference: Reference, insecure: bool) -> RegistryAuth:
    hosts = settings.registry_insecure_hosts
    if insecure and reference.host not in hosts:
        message = "insecure pulls are allowed only from hosts listed in MOLTBOT_REGISTRY_INSECURE"
        raise APIError(400, message, param="insecure")
    password = settings.registry_password.get_secret_value()
    return RegistryAuth(settings.registry_username, password, settings.registry_ca_file, hosts)


class _Pull:
    """One pull on a worker thread, its progress handed to the event loop as Ollama's status objects."""

    def __init__(self, store: ModelStore, text: str, auth: RegistryAuth) -> None:
        self._store, self._text, self._auth = store, text, auth
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def _report(self, item: dict[str, Any]) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _progress(self, total: int, _layers: int) -> Callable[[int], None]:
        """Told the bytes the store lacks (0 when every layer is already there: a delta pull moves none)."""
        done, last = 0, 0.0
        self._report({"status": "pulling layers", "digest": self._text, "total": total, "completed": 0})

        def moved(count: int) -> None:
            nonlocal done, last
            done += count
            if time.monotonic() - last >= 0.2 or done >= total:  # at most five lines a second
                last = time.monotonic()
                self._report({"status": "pulling layers", "digest": self._text, "total": total, "completed": done})

        return moved

    def _run(self) -> Transfer:
        self._report({"status": "pulling manifest"})
        return pull(self._store, self._text, self._auth, progress=self._progress, activate=True)

    async def steps(self, models: ModelManager) -> AsyncIterator[dict[str, Any]]:
        task = asyncio.ensure_future(asyncio.to_thread(self._run))
        while not task.done() or not self._queue.empty():
            getter = asyncio.ensure_future(self._queue.get())
            finished, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter in finished:
                yield getter.result()
            else:
                getter.cancel()
        version = task.result().version  # raises the pull's error
        assert version is not None  # noqa: S101 - a pull installs a version
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        await models.deploy(version.name, version.number)  # served from now on
        yield {"status": "success"}


@router.post("/api/pull")
async def pull_model(body: PullBody, request: Request, models: Models, settings: CurrentSettings) -> Response:
    """Pull a model package from an OCI registry (`host/repository:tag`; never from ollama.com) into the
    store and serve it, reporting progress as Ollama does: pulling manifest, the layers' bytes,
    verifying, writing manifest, success."""
    text = body.model or body.name
    if not text:
        raise APIError(400, "model is required", param="model")
    reference = Reference.parse(text)  # a name without a registry host is a 400 that says so
    auth = _registry_auth(settings, reference, body.insecure)
    if models.store is None:
        raise APIError(409, "this server has no model store", param="model")
    steps = _Pull(models.store, text, auth).steps(models)
    if body.stream:

        async def lines() -> AsyncIterator[dict[str, Any]]:
            try:
                async for item in steps:
                    yield item
            except Exception as exc:  # noqa: BLE001 - the stream's last line says what went wrong
                yield _error_line(exc, request.url.path)

        return StreamingResponse(_lines(lines()), media_type=_NDJSON)
    last: dict[str, Any] = {}
    async for item in steps:
        last = item
    return JSONResponse(last)


@router.delete("/api/delete")
async def delete_model(body: DeleteBody, models: Models) -> Response:
    """Stop serving a model (requests under way finish) and remove every version of it from the store.
    A shipped model is placed in the store again at the next start unless MOLTBOT_BUNDLED_MODELS=false."""
    name = body.model or body.name
    if not name:
        raise APIError(400, "model is required", param="model")
    store = models.store
    if store is None:
        raise APIError(409, "this server has no model store", param="model")
    if not await asyncio.to_thread(store.versions, name):
        raise APIError(404, f"model '{name}' not found", param="model")
    await models.unload(name)
    await asyncio.to_thread(store.remove, name)
    return Response(status_code=200)
