"""Values passed between the engine and its callers; no HTTP here."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from moltbot.engine.logprobs import TokenLogprob


class ModelKind(enum.StrEnum):
    GENERATE = "generate"
    EMBED = "embed"


class FinishReason(enum.StrEnum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


class Role(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


@dataclass(slots=True, frozen=True)
class ToolCall:
    """A function call of an assistant message; `arguments` is JSON text, as OpenAI's API carries it."""

    id: str
    name: str
    arguments: str

    def arguments_value(self) -> Any:
        """The arguments as an object for a chat template (their text if they are not JSON)."""
        try:
            return json.loads(self.arguments)
        except ValueError:
            return self.arguments


@dataclass(slots=True, frozen=True)
class ChatMessage:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant's calls
    tool_call_id: str = ""  # a tool message: the call it answers
    name: str = ""


@dataclass(slots=True, frozen=True)
class ModelInfo:
    """What a loaded model is and what it can do."""

    id: str
    kind: ModelKind
    path: str
    created: int
    context_size: int
    embedding_dim: int = 0
    has_chat_template: bool = False
    size_bytes: int = 0
    vocab_size: int = 0  # token ids a request may send are 0 .. vocab_size - 1
    token_level: bool = False  # reports log-probabilities and takes logit_bias
    parameter_count: int = 0
    chat_template: str = ""  # the template's source, as the model ships it
    # The model file's own description (GGUF metadata: architecture, quantization, lengths), strings only.
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class SamplingParams:
    """How to sample one completion. `grammar` is GBNF text constraining the output."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 40
    min_p: float = 0.05
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0  # llama.cpp's: logits of recent tokens divided (or, negative, multiplied) by it
    grammar: str | None = None
    # Tool calls: once the output shows `tool_trigger`, `tool_grammar` constrains what follows until the
    # JSON value it describes is complete (llama.cpp's lazy grammars do the same); then output is free again.
    tool_trigger: str = ""
    tool_grammar: str | None = None
    tool_active: bool = False  # the prompt already opened a call (tool_choice required or named)
    logprobs: int | None = None  # report each token's log-probability and this many alternatives (0-20)
    logit_bias: tuple[tuple[int, float], ...] = ()  # token id -> bias added to its logit (-100 bans it)


@dataclass(slots=True, frozen=True)
class Prompt:
    """A prompt already tokenized, with the stop strings its template needs."""

    tokens: tuple[int, ...]
    template_stop: tuple[str, ...] = ()
    strip_leading_space: bool = False  # the template ends in "Assistant:"; drop the answer's first space


@dataclass(slots=True, frozen=True)
class Chunk:
    """A piece of streamed output; the last one carries the finish reason and usage."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens found in the KV cache instead of computed
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens generated since the previous chunk
    stop_sequence: str = ""  # on the last chunk: the request's stop string that ended it, if one did


@dataclass(slots=True)
class Completion:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    stop_sequence: str = ""


# One embedding input: text, or the model's token ids of a text (special tokens are added as for text).
EmbedInput = str | tuple[int, ...]


@dataclass(slots=True, frozen=True)
class Embeddings:
    vectors: list[list[float]] = field(default_factory=list)
    prompt_tokens: int = 0
