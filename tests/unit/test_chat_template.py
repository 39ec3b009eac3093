from __future__ import annotations

from moltbot.engine.chat_template import TRANSCRIPT_STOPS, render_transcript
from moltbot.engine.types import ChatMessage, Role


def test_transcript_layout() -> None:
    text, stops = render_transcript(
        [
            ChatMessage(Role.SYSTEM, "Be brief."),
            ChatMessage(Role.USER, "Hi"),
            ChatMessage(Role.ASSISTANT, "Hello."),
            ChatMessage(Role.USER, " Capital of France? "),
        ]
    )
    assert text == "Be brief.\n\nUser: Hi\nAssistant: Hello.\nUser: Capital of France?\nAssistant:"
    assert stops == TRANSCRIPT_STOPS


def test_no_system_prompt() -> None:
    text, _ = render_transcript([ChatMessage(Role.USER, "Hi")])
    assert text == "User: Hi\nAssistant:"
