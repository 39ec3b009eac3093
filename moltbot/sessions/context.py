"""Building a turn's prompt from a session's history, dropping the oldest turns when it outgrows the context.

Policy: the system prompt and the new user message are always kept; whole turns (a user message and
the assistant replies up to the next user message) are dropped oldest first until prompt plus
`max_tokens` fit the model's context. If they do not fit even then, the turn is refused (400).
The same history always renders to the same prompt prefix, so the engine's KV cache finds the
previous turns already computed and evaluates only the new tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from moltbot.engine.backend import PromptBuilder
from moltbot.engine.errors import ContextLengthError
from moltbot.engine.types import ChatMessage, Prompt, Role

_ROLES = {"system": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT}


@dataclass(slots=True, frozen=True)
class Turn:
    prompt: Prompt
    dropped: int  # messages of the history left out


def _turns(history: Sequence[ChatMessage]) -> list[list[ChatMessage]]:
    turns: list[list[ChatMessage]] = []
    for message in history:
        if message.role is Role.USER or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


def fit(
    builder: PromptBuilder,
    system_prompt: str | None,
    history: Sequence[tuple[str, str]],
    new_message: str,
    *,
    max_tokens: int,
    context_size: int,
) -> Turn:
    """The prompt for the next answer: (role, content) history plus the new user message."""
    head = [ChatMessage(Role.SYSTEM, system_prompt)] if system_prompt else []
    turns = _turns([ChatMessage(_ROLES[role], content) for role, content in history])
    new = ChatMessage(Role.USER, new_message)
    dropped = 0
    while True:
        kept = [m for turn in turns for m in turn]
        prompt = builder.render_chat([*head, *kept, new])
        if len(prompt.tokens) + max_tokens <= context_size:
            return Turn(prompt, dropped)
        if not turns:
            raise ContextLengthError(
                f"the system prompt and this message ({len(prompt.tokens)} tokens) with max_tokens {max_tokens} "
                f"do not fit the model's context of {context_size} tokens",
                param="content",
            )
        dropped += len(turns.pop(0))
