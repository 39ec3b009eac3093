"""The plain transcript template for base models whose GGUF carries no chat template."""

from __future__ import annotations

from collections.abc import Sequence

from moltbot.engine.types import ChatMessage, Role

USER_PREFIX = "User:"
ASSISTANT_PREFIX = "Assistant:"
TRANSCRIPT_STOPS = ("\nUser:",)


def render_transcript(messages: Sequence[ChatMessage]) -> tuple[str, tuple[str, ...]]:
    """Render a chat as `User: …` / `Assistant: …` lines, ending with an open `Assistant:` turn."""
    system = [m.content.strip() for m in messages if m.role is Role.SYSTEM]
    lines: list[str] = []
    if system:
        lines.append("\n".join(system) + "\n")
    for message in messages:
        if message.role is Role.USER:
            lines.append(f"{USER_PREFIX} {message.content.strip()}")
        elif message.role is Role.ASSISTANT:
            lines.append(f"{ASSISTANT_PREFIX} {message.content.strip()}")
    lines.append(ASSISTANT_PREFIX)
    return "\n".join(lines), TRANSCRIPT_STOPS
