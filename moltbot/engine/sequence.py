"""One generation request as the engine tracks it."""

from __future__ import annotations

import codecs
import enum
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moltbot.engine.logprobs import TokenLogprob
from moltbot.engine.stops import StopMatcher
from moltbot.engine.tool_window import ToolWindow
from moltbot.engine.types import Prompt, SamplingParams

_ids = itertools.count()


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """Prompt and generated tokens; `n_cached` of them are in the KV cache of slot `slot`."""

    prompt: Prompt
    params: SamplingParams
    emit: Callable[[object], None]
    cancel: threading.Event
    enqueued: float
    deadline: float
    after: Sequence | None = None  # for n > 1: the sequence whose computed prompt this one copies
    id: int = field(default_factory=lambda: next(_ids))
    status: SequenceStatus = SequenceStatus.WAITING
    slot: int = -1
    n_cached: int = 0
    reused: int = 0
    evicted: tuple[int, ...] = ()  # what the slot held before this sequence took it
    generated: list[int] = field(default_factory=list)
    last_token_at: float = 0.0  # monotonic time of the last sampled token; 0 before the first
    sampler: Any = None
    matcher: StopMatcher = field(init=False)
    decoder: codecs.IncrementalDecoder = field(init=False)
    strip_leading_space: bool = field(init=False)
    tools: ToolWindow | None = field(init=False)
    logprobs: list[TokenLogprob] = field(default_factory=list)  # not yet emitted

    def __post_init__(self) -> None:
        params = self.params
        self.tools = None
        if params.tool_grammar is not None:
            self.tools = ToolWindow(params.tool_trigger, active=params.tool_active)
        self.matcher = StopMatcher((*self.params.stop, *self.prompt.template_stop))
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.strip_leading_space = self.prompt.strip_leading_space

    @property
    def tokens(self) -> list[int]:
        return [*self.prompt.tokens, *self.generated]

    @property
    def length(self) -> int:
        return len(self.prompt.tokens) + len(self.generated)

    @property
    def prompt_ready(self) -> bool:
        """Whether the whole prompt is in the KV cache."""
        return self.n_cached >= len(self.prompt.tokens)

    @property
    def n_pending(self) -> int:
        """Tokens not yet in the KV cache: the rest of the prompt, or the last sampled token."""
        return self.length - self.n_cached

    def pending(self, start: int, count: int) -> list[int]:
        tokens = self.tokens
        return tokens[start : start + count]
