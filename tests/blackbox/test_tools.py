"""The bundled instruct model through the real server: it follows a system prompt, and calls tools as
OpenAI's API does (the official SDK and LangChain consume the calls unchanged, streaming or not)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from moltbot.models.bundled import QWEN_1_5B
from tests.blackbox.test_errors import assert_envelope
from tests.helpers import CHAT_MODEL, START_TIMEOUT_S, Server, running_server

MODEL = QWEN_1_5B
SYSTEM = (
    "You are a helpful assistant. Use the tools when needed; once a tool has answered, reply to the user in "
    "one plain sentence."
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOLS = [WEATHER, TIME]
ASK_WEATHER = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the weather in Paris?"}]
REPORT = json.dumps({"temperature_c": 18, "sky": "sunny"})


@pytest.fixture(scope="module")
def server(make_data_dir: Callable[..., Path]) -> Iterator[Server]:
    env = {"MOLTBOT_MODELS": json.dumps([MODEL, CHAT_MODEL]), "MOLTBOT_PARALLEL": "2"}
    with running_server(make_data_dir("tools"), env) as srv:
        srv.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield srv


@pytest.fixture(scope="module")
def oai(server: Server) -> Iterator[openai.OpenAI]:
    http = httpx.Client(verify=server.verify, timeout=300)
    client = openai.OpenAI(base_url=server.base_url, api_key=server.admin_key, max_retries=0, http_client=http)
    yield client
    client.close()


def test_it_follows_a_system_prompt(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Answer in one word, written in CAPITAL LETTERS."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        temperature=0,
        max_tokens=10,
    )
    answer = (reply.choices[0].message.content or "").strip().rstrip(".")
    assert answer == "PARIS"


def test_a_two_step_tool_loop(oai: openai.OpenAI) -> None:
    messages: list[Any] = list(ASK_WEATHER)
    first = oai.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert not choice.message.content
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": REPORT})
    final = oai.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, temperature=0)
    answer = final.choices[0].message.content or ""
    assert final.choices[0].finish_reason == "stop" and not final.choices[0].message.tool_calls
    assert "18" in answer and "<tool" not in answer


def test_a_two_step_tool_loop_streamed(oai: openai.OpenAI) -> None:
    messages: list[Any] = list(ASK_WEATHER)
    calls: dict[int, dict[str, str]] = {}
    content, finish = "", None
    for chunk in oai.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, temperature=0, stream=True):
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for part in delta.tool_calls or []:
            entry = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += part.id or ""
            entry["name"] += (part.function.name if part.function else None) or ""
            entry["arguments"] += (part.function.arguments if part.function else None) or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and not content.strip()
    assert list(calls) == [0] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    call = {
        "id": calls[0]["id"],
        "type": "function",
        "function": {"name": "get_weather", "arguments": calls[0]["arguments"]},
    }
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": REPORT},
    ]
    text = "".join(
        c.choices[0].delta.content or ""
        for c in oai.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, temperature=0, stream=True)
    )
    assert "18" in text and "<tool" not in text


def test_tool_choice_none_required_and_named(oai: openai.OpenAI) -> None:
    none = oai.chat.completions.create(
        model=MODEL, messages=ASK_WEATHER, tools=TOOLS, tool_choice="none", temperature=0
    )
    assert not none.choices[0].message.tool_calls and none.choices[0].message.content
    joke = [{"role": "user", "content": "Tell me a short joke."}]
    required = oai.chat.completions.create(
        model=MODEL, messages=joke, tools=TOOLS, tool_choice="required", temperature=0
    )
    assert required.choices[0].message.tool_calls  # even for a joke: a call, and a well-formed one
    for call in required.choices[0].message.tool_calls:
        assert call.function.name in {"get_weather", "get_time"}
        assert isinstance(json.loads(call.function.arguments)["city"], str)
    named = oai.chat.completions.create(
        model=MODEL,
        messages=ASK_WEATHER,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        temperature=0,
    )
    (call,) = named.choices[0].message.tool_calls or []
    assert call.function.name == "get_time" and json.loads(call.function.arguments)["city"]


def test_parallel_calls_and_turning_them_off(oai: openai.OpenAI) -> None:
    ask = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Call get_weather for Paris, then call get_weather for Tokyo."},
    ]
    calls = []
    for temperature_seed in range(3):  # the small model makes one call or two; both shapes are valid OpenAI
        reply = oai.chat.completions.create(
            model=MODEL, messages=ask, tools=TOOLS, tool_choice="required", temperature=0.7, seed=temperature_seed
        )
        calls.append(reply.choices[0].message.tool_calls or [])
    assert all(len(c) >= 1 for c in calls)
    for found in calls:
        assert len({c.id for c in found}) == len(found)  # every call its own id
    single = oai.chat.completions.create(
        model=MODEL, messages=ask, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, temperature=0
    )
    assert len(single.choices[0].message.tool_calls or []) == 1


def test_legacy_functions_are_mapped(oai: openai.OpenAI, server: Server) -> None:
    body = {
        "model": MODEL,
        "messages": ASK_WEATHER,
        "functions": [WEATHER["function"]],
        "function_call": {"name": "get_weather"},
        "temperature": 0,
    }
    with server.client(timeout=300) as client:
        reply = client.post("/v1/chat/completions", json=body).json()
    assert reply["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_langchain_bind_tools_agent(server: Server) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return REPORT

    llm = ChatOpenAI(
        model=MODEL,
        base_url=server.base_url,
        api_key=server.admin_key,  # type: ignore[arg-type]
        temperature=0,
        max_retries=0,
        http_client=httpx.Client(verify=server.verify, timeout=300),
    ).bind_tools([get_weather])
    messages: list[Any] = [SystemMessage(SYSTEM), HumanMessage("What is the weather in Paris?")]
    first = llm.invoke(messages)
    assert first.tool_calls and first.tool_calls[0]["name"] == "get_weather"
    assert first.tool_calls[0]["args"] == {"city": "Paris"}
    messages += [
        first,
        ToolMessage(get_weather.invoke(first.tool_calls[0]["args"]), tool_call_id=first.tool_calls[0]["id"]),
    ]
    streamed = None
    for piece in llm.stream(messages):
        streamed = piece if streamed is None else streamed + piece
    assert streamed is not None and "18" in str(streamed.content)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
        ({"tools": [WEATHER, WEATHER]}, "tools.1.function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}]},
            "tools.0.function.parameters",
        ),
        ({"tools": [{"type": "retrieval"}]}, "tools.0"),
        ({"tools": TOOLS, "functions": [WEATHER["function"]]}, "functions"),
        ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_bad_tools_are_400s(server: Server, change: dict[str, Any], param: str) -> None:
    body = {"model": MODEL, "messages": ASK_WEATHER, "tools": TOOLS, **change}
    with server.client() as client:
        assert_envelope(client.post("/v1/chat/completions", json=body), 400, param=param)


def test_a_tool_message_needs_a_matching_call(server: Server) -> None:
    messages = [*ASK_WEATHER, {"role": "tool", "tool_call_id": "call_nowhere", "content": REPORT}]
    with server.client() as client:
        response = client.post("/v1/chat/completions", json={"model": MODEL, "messages": messages, "tools": TOOLS})
        no_id = client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}
        )
    assert_envelope(response, 400, param="messages.2.tool_call_id")
    assert_envelope(no_id, 400, param="messages.0")


def test_tools_on_a_model_without_a_tool_template_are_refused(server: Server) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/chat/completions",
            json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS},
        )
    assert "not made to call tools" in assert_envelope(response, 400, param="tools")["message"]


def test_fill_in_the_middle(server: Server) -> None:
    body = {
        "model": MODEL,
        "prompt": "def add(a, b):\n    return ",
        "suffix": "\n\n\nprint(add(2, 3))\n",
        "max_tokens": 12,
        "temperature": 0,
    }
    with server.client(timeout=300) as client:
        reply = client.post("/v1/completions", json=body).json()
    middle = reply["choices"][0]["text"]
    assert middle.strip().startswith("a + b"), middle
    assert "print(add" not in middle
