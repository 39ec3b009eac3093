"""Text completions through the real server."""

from __future__ import annotations

import openai

from tests.helpers import CHAT_MODEL

PROMPT = "Question: What is the capital of France?\nAnswer:"


def test_completion_answers(oai: openai.OpenAI) -> None:
    reply = oai.completions.create(model=CHAT_MODEL, prompt=PROMPT, temperature=0, max_tokens=8)
    assert reply.object == "text_completion"
    assert "Paris" in reply.choices[0].text
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens <= 8


def test_default_max_tokens_is_16(oai: openai.OpenAI) -> None:
    reply = oai.completions.create(model=CHAT_MODEL, prompt="Once upon a time", temperature=0)
    assert reply.usage is not None and reply.usage.completion_tokens <= 16


def test_prompt_list_gives_one_choice_each(oai: openai.OpenAI) -> None:
    prompts = [PROMPT, "Question: What is the capital of Germany?\nAnswer:"]
    reply = oai.completions.create(model=CHAT_MODEL, prompt=prompts, temperature=0, max_tokens=6)
    assert [c.index for c in reply.choices] == [0, 1]
    assert "Paris" in reply.choices[0].text
    assert "Berlin" in reply.choices[1].text


def test_stream_matches_non_stream(oai: openai.OpenAI) -> None:
    solo = oai.completions.create(model=CHAT_MODEL, prompt=PROMPT, temperature=0, max_tokens=12)
    chunks = list(
        oai.completions.create(
            model=CHAT_MODEL,
            prompt=PROMPT,
            temperature=0,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == solo.choices[0].text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == solo.usage.completion_tokens  # type: ignore[union-attr]


def test_echo_prepends_the_prompt(oai: openai.OpenAI) -> None:
    reply = oai.completions.create(model=CHAT_MODEL, prompt=PROMPT, temperature=0, max_tokens=4, echo=True)
    assert reply.choices[0].text.startswith(PROMPT)
