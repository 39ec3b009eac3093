"""Request models of the OpenAI-compatible API (pydantic, at the edge only).

Unknown fields are ignored, as OpenAI clients send fields servers may not know; known OpenAI
fields that Moltbot does not implement are refused with a 400 when set (see `unsupported`).
Types are strict, as OpenAI's are: `"stream": "yes"` or `"n": "2"` is a 400, not a guess.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ModelId = Annotated[str, Field(min_length=1, max_length=256)]
Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
Seed = Annotated[int, Field(ge=-(2**63), le=2**64 - 1)]


_STRICT = ConfigDict(extra="ignore", strict=True)
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
# What a content part of each type is, for the message that refuses it.
_PART_KINDS = {"image_url": "images", "input_audio": "audio", "file": "files"}


class _Request(BaseModel):
    model_config = _STRICT


class ContentPart(BaseModel):
    """One part of a message's content; only text parts reach a text model (see `ChatMessageIn.text`)."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: str = Field(max_length=64)
    text: str | None = None


class UnsupportedContentError(ValueError):
    """A content part the model cannot take (an image, audio, a file); `param` names it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class FunctionCallIn(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(max_length=1 << 20)


class ToolCallIn(BaseModel):
    model_config = _STRICT
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(default=None, max_length=256)
    tool_calls: list[ToolCallIn] | None = Field(default=None, max_length=128)  # an assistant's calls
    tool_call_id: str | None = Field(default=None, max_length=256)  # a tool message: the call it answers

    @model_validator(mode="after")
    def _well_formed(self) -> ChatMessageIn:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry 'tool_calls'")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs 'tool_call_id'")
        if self.tool_call_id is not None and self.role != "tool":
            raise ValueError("only tool messages carry 'tool_call_id'")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs 'content'")
        return self

    def text(self, param: str = "content") -> str:
        """The text the model reads: a string as it is, text parts joined with a newline between them
        (as OpenAI's models see them). Raises UnsupportedContentError for any other part."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        pieces = []
        for index, part in enumerate(self.content):
            where = f"{param}.{index}"
            if part.type != "text":
                kind = _PART_KINDS.get(part.type)
                what = f"this model does not accept {kind}" if kind else f"content parts of type {part.type!r}"
                raise UnsupportedContentError(f"{what}: only text parts are supported", where)
            if part.text is None:
                raise UnsupportedContentError("a text part needs 'text'", where)
            pieces.append(part.text)
        return "\n".join(pieces)


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)
    name: str = Field(default="response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = _STRICT
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class _Sampling(_Request):
    model: ModelId
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: Annotated[int, Field(ge=1)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: Seed | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(default=None, max_length=1024)
    user: str | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # OpenAI's deprecated form of tools, mapped onto them.
    functions: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    function_call: Literal["none", "auto"] | dict[str, Any] | None = None

    def unsupported(self) -> str | None:
        """The first set field that Moltbot does not implement, if any."""
        return None

    def logprob_count(self) -> int | None:
        """How many alternatives to report per token (None: no log-probabilities)."""
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return (self.top_logprobs or 0) if self.logprobs else None

    def declared_tools(self) -> list[dict[str, Any]]:
        """`tools`, or the legacy `functions` as tools (not both)."""
        if self.tools is not None and self.functions is not None:
            raise ValueError("send 'tools' or the deprecated 'functions', not both")
        if self.functions is not None:
            return [{"type": "function", "function": f} for f in self.functions]
        return self.tools or []

    def choice(self) -> Any:
        """`tool_choice`, or the legacy `function_call` in its terms."""
        if self.function_call is None or self.tool_choice is not None:
            return self.tool_choice
        if isinstance(self.function_call, dict):
            return {"type": "function", "function": {"name": self.function_call.get("name")}}
        return self.function_call


class CompletionRequest(_Sampling):
    # A string, strings, the model's token ids, or lists of them (as OpenAI's API takes).
    prompt: str | Annotated[list[str], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = 16
    echo: bool = False
    suffix: str | None = Field(default=None, max_length=1 << 20)  # fill in the middle, on models made for it
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    best_of: int | None = None

    def prompts(self) -> list[str | list[int]]:
        """Each prompt: text, or the model's token ids."""
        return _items(self.prompt)

    def unsupported(self) -> str | None:
        if self.best_of not in (None, 1):
            return "best_of"
        if self.logprobs is not None and self.echo:
            return "echo"  # with logprobs: the prompt's own log-probabilities are not computed
        return None


class EmbeddingRequest(_Request):
    model: ModelId
    input: str | Annotated[list[str], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None
    # Not OpenAI's: cut inputs longer than the model's context instead of answering 400.
    truncate: bool = False

    def inputs(self) -> list[str | list[int]]:
        """Each input: text, or the model's token ids."""
        return _items(self.input)


def _items(value: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """One text or token-id list, or a list of them, as a list of items."""
    if isinstance(value, str):
        return [value]
    items: list[Any] = list(value)
    if items and isinstance(items[0], int):
        return [items]
    return items


class KeyCreateRequest(BaseModel):
    """POST /v1/admin/keys. Not an OpenAI shape: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(min_length=1, max_length=16)
    expires_in_days: float | None = Field(default=None, gt=0, le=36_500)


_MAX_TEXT = 100_000  # characters of a system prompt or a message


class SessionCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(default=None, min_length=1, max_length=200)  # default: the server's chat model
    system_prompt: str | None = Field(default=None, max_length=_MAX_TEXT)
    title: str | None = Field(default=None, max_length=500)
    metadata: dict[str, Any] | None = None


class SessionUpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    title: str | None = Field(default=None, max_length=500)
    metadata: dict[str, Any] | None = None


class SessionMessageRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    content: str = Field(min_length=1, max_length=_MAX_TEXT)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stream: bool = False


class ExportedMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["user", "assistant"]
    content: str = Field(max_length=_MAX_TEXT)
    status: Literal["complete", "interrupted"] = "complete"
    created_at: float | None = Field(default=None, ge=0, le=1e11)


class SessionImportRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = Field(min_length=1, max_length=200)
    title: str | None = Field(default=None, max_length=500)
    metadata: dict[str, Any] | None = None
    system_prompt: str | None = Field(default=None, max_length=_MAX_TEXT)
    messages: list[ExportedMessage] = Field(default_factory=list, max_length=10_000)


class DeployRequest(BaseModel):
    """POST /v1/admin/models/{name}/deploy. Not an OpenAI shape: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: int | None = Field(default=None, ge=1, le=1_000_000)  # default: the store's active version
    in_place: bool = False  # unload the serving version first (when both would not fit in memory)


class PipelineValidateRequest(BaseModel):
    """POST /v1/pipelines/validate: a pipeline as a shipped name, a definition object, or YAML/JSON text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    pipeline: str | dict[str, Any] | None = None
    pipeline_yaml: str | None = Field(default=None, max_length=64 * 1024)


class PipelineRunRequest(PipelineValidateRequest):
    """POST /v1/pipelines/run: one of `text` (a plain text) and `pages` (a paged document's pages)."""

    text: str | None = Field(default=None, max_length=4_000_000)
    pages: list[Annotated[str, Field(max_length=400_000)]] | None = Field(default=None, max_length=2000)


class DocumentAskRequest(BaseModel):
    """POST /v1/documents/ask: a question over the key's documents (all, or those named)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    question: str = Field(min_length=1, max_length=2000)
    document_ids: list[Annotated[str, Field(pattern=r"^doc_[0-9a-f]{24}$")]] | None = Field(
        default=None, max_length=200
    )
    top_k: int = Field(default=6, ge=1, le=12)


class SpeechRequest(BaseModel):
    """POST /v1/audio/speech (OpenAI's fields). `instructions` (a style prompt) is refused: neither
    Piper nor espeak-ng can follow one."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(default=None, max_length=64)
    input: str = Field(max_length=100_000)  # the service's own limit (4096 by default) names the field
    voice: str = Field(default="joe", min_length=1, max_length=64)
    response_format: str = Field(default="mp3", max_length=16)
    speed: float = Field(default=1.0)
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: str | None = Field(default=None, max_length=4096)
