"""Chat completions through the real server on the bundled model, with the openai SDK and httpx."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.helpers import CHAT_MODEL, Server

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_answers_a_short_question(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model=CHAT_MODEL, messages=QUESTION, temperature=0, max_tokens=32)
    choice = reply.choices[0]
    assert "Paris" in (choice.message.content or "")
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert reply.object == "chat.completion"
    assert reply.model == CHAT_MODEL
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 5
    assert 0 < reply.usage.completion_tokens <= 32
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_max_tokens_gives_length(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        temperature=0,
        max_completion_tokens=3,
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_stream_chunks_and_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=CHAT_MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=32,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    solo = oai.chat.completions.create(model=CHAT_MODEL, messages=QUESTION, temperature=0, max_tokens=32)
    assert text == solo.choices[0].message.content


def test_stream_wire_format_ends_with_done(server: Server) -> None:
    body = {"model": CHAT_MODEL, "messages": QUESTION, "temperature": 0, "max_tokens": 8, "stream": True}
    with server.client() as client, client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert all("usage" not in e for e in events)  # only with stream_options.include_usage
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_stop_sequence(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model=CHAT_MODEL, messages=QUESTION, temperature=0, stop=["Paris"])
    content = reply.choices[0].message.content or ""
    assert "Paris" not in content
    assert reply.choices[0].finish_reason == "stop"


def test_seed_makes_sampling_reproducible(oai: openai.OpenAI) -> None:
    prompt = [{"role": "user", "content": "Tell me something about cats."}]
    # The first run computes the whole prompt; later ones find all but its last token cached. The two
    # paths can differ in the last bits of the logits (tests/engine/test_batch_numerics.py), so the
    # comparison is between runs on the same cache state.
    runs = [
        oai.chat.completions.create(model=CHAT_MODEL, messages=prompt, temperature=1.0, seed=1234, max_tokens=24)
        for _ in range(3)
    ]
    texts = [r.choices[0].message.content for r in runs]
    assert texts[1] == texts[2]


def test_system_and_history_are_used(oai: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "You answer questions about geography."},
        {"role": "user", "content": "What is the capital of Italy?"},
        {"role": "assistant", "content": "The capital of Italy is Rome."},
        {"role": "user", "content": "What is the capital of Germany?"},
    ]
    reply = oai.chat.completions.create(model=CHAT_MODEL, messages=messages, temperature=0, max_tokens=24)
    assert "Berlin" in (reply.choices[0].message.content or "")


def test_json_object_output_parses(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=CHAT_MODEL,
        messages=[
            {"role": "user", "content": "Reply in JSON. What is the capital of Italy?"},
            {"role": "assistant", "content": '{"capital": "Rome"}'},
            {"role": "user", "content": "Reply in JSON. What is the capital of France?"},
        ],
        temperature=0,
        max_tokens=100,
        response_format={"type": "json_object"},
    )
    assert reply.choices[0].finish_reason == "stop"
    assert json.loads(reply.choices[0].message.content or "") == {"capital": "Paris"}


def test_json_schema_output_validates(oai: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"country": {"type": "string", "maxLength": 40}, "population": {"type": "integer"}},
        "required": ["country", "population"],
        "additionalProperties": False,
    }
    reply = oai.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Describe France as JSON."}],
        temperature=0,
        max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"name": "country", "schema": schema, "strict": True}},
    )
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), schema)


@pytest.mark.parametrize("penalty", ["presence_penalty", "frequency_penalty"])
def test_penalties_are_accepted(oai: openai.OpenAI, penalty: str) -> None:
    reply = oai.chat.completions.create(
        model=CHAT_MODEL, messages=QUESTION, temperature=0, max_tokens=8, **{penalty: 1.5}
    )
    assert reply.choices[0].message.content
