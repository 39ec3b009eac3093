"""The interface every inference backend implements."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Protocol

from moltbot.engine.types import (
    ChatMessage,
    Chunk,
    Completion,
    Embeddings,
    EmbedInput,
    ModelInfo,
    Prompt,
    SamplingParams,
)


class PromptBuilder(Protocol):
    """Turns text and chats into prompt tokens; safe to call from any thread."""

    @property
    def info(self) -> ModelInfo: ...

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def fill_in_middle(self, prefix: str, suffix: str) -> list[int]:
        """A fill-in-the-middle prompt; UnsupportedOperationError for a model without FIM tokens."""
        ...

    @property
    def supports_tools(self) -> bool:
        """Whether the model's chat template renders tools (and so the model was taught to call them)."""
        ...

    def render_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None, *, prefill: str = ""
    ) -> Prompt:
        """The prompt for the assistant's next message, which starts with `prefill`."""
        ...


class Backend(PromptBuilder, Protocol):
    """A loaded model run one request at a time from one engine thread."""

    def stream(self, prompt: Prompt, params: SamplingParams, cancel: threading.Event) -> Iterator[Chunk]:
        """Yield text pieces; the last chunk has a finish reason and the token counts."""
        ...

    def embed(
        self, inputs: Sequence[EmbedInput], *, truncate: bool = False, cancel: threading.Event | None = None
    ) -> Embeddings:
        """Vectors of texts or token ids; past the context a ContextLengthError unless `truncate`;
        stops between batches once `cancel` is set."""
        ...

    def close(self) -> None: ...


class Worker(Protocol):
    """What the gateway talks to for one loaded model."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def backend(self) -> PromptBuilder: ...

    @property
    def queue_depth(self) -> int: ...

    def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Chunk]: ...

    def streams(self, prompt: Prompt, params: SamplingParams, n: int) -> list[AsyncIterator[Chunk]]:
        """`n` completions of one prompt (admitted together, or refused together)."""
        ...

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Completion: ...

    async def embed(self, inputs: Sequence[EmbedInput], *, truncate: bool = False) -> Embeddings: ...

    def close(self) -> None: ...
