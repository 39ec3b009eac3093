"""The interface every inference backend implements."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Protocol

from moltbot.engine.types import ChatMessage, Chunk, Embeddings, ModelInfo, Prompt, SamplingParams


class Backend(Protocol):
    """A loaded model. Calls are made from one engine thread at a time."""

    @property
    def info(self) -> ModelInfo: ...

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]: ...

    def render_chat(self, messages: Sequence[ChatMessage]) -> Prompt: ...

    def stream(self, prompt: Prompt, params: SamplingParams, cancel: threading.Event) -> Iterator[Chunk]:
        """Yield text pieces; the last chunk has a finish reason and the token counts."""
        ...

    def embed(self, texts: Sequence[str]) -> Embeddings: ...

    def close(self) -> None: ...
