"""Ollama's and Anthropic's requests turned into the generation service's: defaults, options, history
with tool calls and results, tool choices, refusals."""

from __future__ import annotations

import json

import pytest

from moltbot.engine.types import Role
from moltbot.errors import InvalidRequestError
from moltbot.gateway.errors import APIError, error_body
from moltbot.gateway.routes import anthropic, ollama


def test_ollama_unset_options_take_ollamas_defaults() -> None:
    sampling = ollama._sampling(None)
    assert (sampling.temperature, sampling.top_k, sampling.top_p, sampling.min_p) == (0.8, 40, 0.9, 0.0)
    assert sampling.repeat_penalty == 1.1 and sampling.max_tokens is None


def test_ollama_options_map_onto_sampling() -> None:
    options = ollama.Options(
        temperature=0.2, top_k=5, num_predict=7, num_ctx=512, stop="END", seed=3, repeat_penalty=1.3
    )
    sampling = ollama._sampling(options)
    assert (sampling.temperature, sampling.top_k, sampling.max_tokens, sampling.context_limit) == (0.2, 5, 7, 512)
    assert sampling.stop == ("END",) and sampling.seed == 3 and sampling.repeat_penalty == 1.3
    assert ollama._sampling(ollama.Options(num_predict=-1)).max_tokens is None
    with pytest.raises(APIError):
        ollama._sampling(ollama.Options(num_predict=0))


def test_ollama_tool_messages_answer_the_earliest_open_call_of_their_name() -> None:
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    other = {"function": {"name": "get_time", "arguments": {"city": "Rome"}}}
    messages = [
        ollama.Message(role="user", content="weather and time?"),
        ollama.Message.model_validate({"role": "assistant", "content": "", "tool_calls": [call, other]}),
        ollama.Message(role="tool", content="12:00", tool_name="get_time"),
        ollama.Message(role="tool", content="sunny"),
    ]
    out = ollama._messages(messages)
    calls = out[1].tool_calls
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"city": "Rome"}),
    ]
    assert out[2].role is Role.TOOL and out[2].tool_call_id == calls[1].id
    assert out[3].tool_call_id == calls[0].id
    with pytest.raises(InvalidRequestError):
        ollama._messages([ollama.Message(role="tool", content="orphan")])


def test_ollama_format() -> None:
    assert ollama._output("") is None and ollama._output(None) is None
    json_mode = ollama._output("json")
    assert json_mode is not None and json_mode.kind == "json_object"
    schema = ollama._output({"type": "object"})
    assert schema is not None and schema.kind == "json_schema" and schema.schema == {"type": "object"}


def test_anthropic_blocks_become_the_engines_history() -> None:
    body = anthropic.MessagesBody.model_validate(
        {
            "model": "m",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": "weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny", "is_error": False},
                        {"type": "text", "text": "and tomorrow?"},
                    ],
                },
            ],
        }
    )
    out = anthropic._messages(body)
    assert [m.role for m in out] == [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.TOOL, Role.USER]
    assert out[0].content == "be brief" and out[2].content == "Let me check."
    assert out[2].tool_calls[0].id == "toolu_1" and json.loads(out[2].tool_calls[0].arguments) == {"city": "Paris"}
    assert out[3].tool_call_id == "toolu_1" and out[3].content == "sunny" and out[4].content == "and tomorrow?"


def test_anthropic_refuses_blocks_it_cannot_read() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
    body = anthropic.MessagesBody.model_validate(
        {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [image]}]}
    )
    with pytest.raises(APIError) as caught:
        anthropic._messages(body)
    assert caught.value.param == "messages.0.content.0"


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
        ({"type": "none"}, "none", None),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}, None),
    ],
)
def test_anthropic_tool_choice(choice: dict[str, object], expected: object, parallel: bool | None) -> None:
    body = anthropic.MessagesBody.model_validate(
        {
            "model": "m",
            "max_tokens": 1,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": choice,
        }
    )
    tools, mapped, parallel_calls = anthropic._tools(body)
    assert tools[0]["function"]["parameters"] == {"type": "object"}
    assert mapped == expected and parallel_calls == parallel


def test_each_api_family_has_its_own_error_shape() -> None:
    error = APIError(404, "no such model", param="model", code="model_not_found")
    assert error_body("/api/chat", error) == {"error": "no such model"}
    assert error_body("/v1/messages", error) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no such model"},
    }
    assert error_body("/v1/chat/completions", error)["error"]["code"] == "model_not_found"
