"""Ollama's API and Anthropic's Messages API through the real server, driven by their official Python
clients (`ollama` 0.6, `anthropic`), plus raw-HTTP checks of the shapes and error envelopes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from moltbot.models.bundled import QWEN_1_5B
from tests.helpers import EMBEDDING_MODEL, START_TIMEOUT_S, Server, running_server

MODEL = QWEN_1_5B
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
OLLAMA_WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": WEATHER_SCHEMA},
}
ANTHROPIC_WEATHER = {"name": "get_weather", "description": "Current weather in a city", "input_schema": WEATHER_SCHEMA}
REPORT = json.dumps({"temperature_c": 18, "sky": "sunny"})
GREEDY = {"temperature": 0, "seed": 1}
SYSTEM = (
    "You are a helpful assistant. Use the tools when needed; once a tool has answered, reply to the user in "
    "one plain sentence."
)
GREEDY_BODY = {"temperature": 0}  # this SDK has no temperature parameter: sent as an extra field


@pytest.fixture(scope="module")
def server(make_data_dir: Callable[..., Path]) -> Iterator[Server]:
    env = {"MOLTBOT_MODELS": json.dumps([MODEL, EMBEDDING_MODEL]), "MOLTBOT_PARALLEL": "2"}
    with running_server(make_data_dir("client-apis"), env) as srv:
        srv.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield srv


@pytest.fixture(scope="module")
def olla(server: Server) -> Iterator[ollama.Client]:
    host = server.base_url.removesuffix("/v1")
    client = ollama.Client(host=host, headers={"Authorization": f"Bearer {server.admin_key}"}, verify=server.verify)
    yield client
    client._client.close()  # the client has no close() of its own


@pytest.fixture(scope="module")
def claude(server: Server) -> Iterator[anthropic.Anthropic]:
    http = anthropic.DefaultHttpxClient(verify=server.verify, timeout=300)
    client = anthropic.Anthropic(
        base_url=server.base_url.removesuffix("/v1"), api_key=server.admin_key, max_retries=0, http_client=http
    )
    yield client
    client.close()


def _raw(server: Server, method: str, path: str, body: Any = None, **headers: str) -> httpx.Response:
    with httpx.Client(verify=server.verify, timeout=120) as http:
        return http.request(method, server.base_url.removesuffix("/v1") + path, json=body, headers=headers)


# -- Ollama --------------------------------------------------------------------------------------


def test_ollama_chat_follows_the_system_prompt(olla: ollama.Client) -> None:
    messages = [
        {"role": "system", "content": "Whatever the user says, answer with the single word PINEAPPLE."},
        {"role": "user", "content": "What is your favourite fruit?"},
    ]
    reply = olla.chat(model=MODEL, messages=messages, options={**GREEDY, "num_predict": 20})
    assert "PINEAPPLE" in (reply.message.content or "").upper()
    assert reply.done and reply.done_reason == "stop" and reply.message.role == "assistant"
    assert reply.prompt_eval_count and reply.prompt_eval_count > 10 and reply.eval_count
    assert reply.total_duration and reply.eval_duration and reply.total_duration >= reply.eval_duration > 0


def test_ollama_streams_ndjson_with_a_final_summary(olla: ollama.Client) -> None:
    parts = list(olla.chat(model=MODEL, messages=[{"role": "user", "content": "Count from 1 to 5."}], stream=True))
    assert len(parts) > 3 and all(not p.done for p in parts[:-1]) and parts[-1].done
    text = "".join(p.message.content or "" for p in parts)
    assert "3" in text
    assert parts[-1].eval_count == len([p for p in parts[:-1] if p.message.content]) or parts[-1].eval_count


def test_ollama_num_predict_ends_with_length(olla: ollama.Client) -> None:
    reply = olla.generate(model=MODEL, prompt="Write a long story about a dragon.", options={"num_predict": 5})
    assert reply.done_reason == "length" and reply.eval_count == 5


def test_ollama_generate_streams_and_takes_a_system_prompt(olla: ollama.Client) -> None:
    parts = list(
        olla.generate(
            model=MODEL,
            prompt="What is the capital of France?",
            system="Answer in one word.",
            options=GREEDY,
            stream=True,
        )
    )
    assert "Paris" in "".join(p.response for p in parts) and parts[-1].done


def test_ollama_format_schema_is_enforced(olla: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    reply = olla.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a cat called Tom, aged 3, as JSON."}],
        format=schema,
        options=GREEDY,
    )
    value = json.loads(reply.message.content or "")
    assert isinstance(value["name"], str) and isinstance(value["age"], int)


def test_ollama_tool_round_trip(olla: ollama.Client) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
    first = olla.chat(model=MODEL, messages=messages, tools=[OLLAMA_WEATHER], options=GREEDY)
    calls = first.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]
    assert dict(calls[0].function.arguments) == {"city": "Paris"}
    assert "<tool_call>" not in (first.message.content or "")
    messages += [first.message, {"role": "tool", "content": REPORT, "tool_name": "get_weather"}]
    final = olla.chat(model=MODEL, messages=messages, tools=[OLLAMA_WEATHER], options=GREEDY)
    assert not final.message.tool_calls
    answer = final.message.content or ""
    assert "18" in answer or "sunny" in answer.lower()


def test_ollama_embed_and_the_older_embeddings(olla: ollama.Client) -> None:
    reply = olla.embed(model=EMBEDDING_MODEL, input=["a cat", "a dog"])
    assert len(reply.embeddings) == 2 and len(reply.embeddings[0]) == 384
    assert reply.prompt_eval_count and reply.prompt_eval_count > 0
    single = olla.embeddings(model=EMBEDDING_MODEL, prompt="a cat")
    assert single.embedding == pytest.approx(list(reply.embeddings[0]), abs=1e-5)


def test_ollama_lists_shows_and_reports_running_models(olla: ollama.Client) -> None:
    names = {m.model for m in olla.list().models}
    assert {MODEL, EMBEDDING_MODEL} <= names
    running = {m.model: m for m in olla.ps().models}
    assert running[MODEL].context_length and running[MODEL].size and running[MODEL].digest
    shown = olla.show(MODEL)
    assert shown.capabilities is not None and {"completion", "tools", "insert"} <= set(shown.capabilities)
    assert shown.details is not None and shown.details.format == "gguf"
    assert shown.details.family == "qwen2" and shown.details.quantization_level == "Q4_K_M"
    assert shown.details.parameter_size == "1.5B"
    assert shown.template and "<tool_call>" in shown.template
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "qwen2"
    assert "Apache" in (shown.license or "")
    embedder = olla.show(EMBEDDING_MODEL)
    assert embedder.capabilities == ["embedding"]


def test_ollama_refusals_in_ollamas_shape(server: Server, olla: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        olla.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as image:
        olla.chat(model=MODEL, messages=[{"role": "user", "content": "what is this?", "images": ["aGVsbG8="]}])
    assert image.value.status_code == 400 and "image" in image.value.error
    key = {"Authorization": f"Bearer {server.admin_key}"}
    cases = [
        ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "think": True}, 400),
        ("/api/chat", {"model": MODEL, "messages": "hello"}, 400),
        ("/api/generate", {"model": MODEL, "prompt": "hi", "options": {"num_predict": 0}}, 400),
        ("/api/generate", {"model": MODEL, "prompt": "hi", "options": {"temperature": "hot"}}, 400),
        ("/api/embed", {"model": MODEL, "input": "hi"}, 400),
        ("/api/show", {"model": "nope"}, 404),
    ]
    for path, body, status in cases:
        reply = _raw(server, "POST", path, body, **key)
        assert reply.status_code == status, (path, body, reply.text)
        assert set(reply.json()) == {"error"} and isinstance(reply.json()["error"], str), reply.text
    bad_json = httpx.post(
        server.base_url.removesuffix("/v1") + "/api/chat",
        content=b"{not json",
        headers={**key, "Content-Type": "application/json"},
        verify=server.verify,
    )
    assert bad_json.status_code == 400 and set(bad_json.json()) == {"error"}
    unauthenticated = _raw(server, "GET", "/api/tags")
    assert unauthenticated.status_code == 401 and set(unauthenticated.json()) == {"error"}
    assert _raw(server, "HEAD", "/").status_code == 200
    assert _raw(server, "GET", "/api/version", **key).json()["version"]


FINAL_FIELDS = {
    "model",
    "created_at",
    "done",
    "done_reason",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
}
DETAILS_FIELDS = {"parent_model", "format", "family", "families", "parameter_size", "quantization_level"}


def test_ollama_shapes_hold_the_documented_fields(server: Server) -> None:
    """The field lists of Ollama's API documentation, on raw HTTP."""
    key = {"Authorization": f"Bearer {server.admin_key}"}
    ask = {"model": MODEL, "stream": False, "options": {"num_predict": 3}}
    generated = _raw(server, "POST", "/api/generate", {**ask, "prompt": "Hi"}, **key).json()
    assert set(generated) >= FINAL_FIELDS | {"response"} and generated["done"] is True
    chatted = _raw(server, "POST", "/api/chat", {**ask, "messages": [{"role": "user", "content": "Hi"}]}, **key).json()
    assert set(chatted) >= FINAL_FIELDS | {"message"} and set(chatted["message"]) >= {"role", "content"}
    assert all(isinstance(chatted[f], int) for f in FINAL_FIELDS if f.endswith(("duration", "count")))
    streamed = _raw(server, "POST", "/api/generate", {**ask, "stream": True, "prompt": "Hi"}, **key)
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert all(set(line) == {"model", "created_at", "response", "done"} for line in lines[:-1])
    assert set(lines[-1]) >= FINAL_FIELDS
    for model in _raw(server, "GET", "/api/tags", **key).json()["models"]:
        assert set(model) == {"name", "model", "modified_at", "size", "digest", "details"}
        assert set(model["details"]) == DETAILS_FIELDS
    for model in _raw(server, "GET", "/api/ps", **key).json()["models"]:
        assert set(model) >= {"name", "model", "size", "digest", "details", "expires_at", "size_vram"}
    shown = _raw(server, "POST", "/api/show", {"model": MODEL}, **key).json()
    assert set(shown) >= {"license", "modelfile", "parameters", "template", "details", "model_info", "capabilities"}
    embedded = _raw(server, "POST", "/api/embed", {"model": EMBEDDING_MODEL, "input": "hi"}, **key).json()
    assert set(embedded) == {"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}


def test_ollama_loads_a_model_when_asked_with_no_messages(server: Server) -> None:
    key = {"Authorization": f"Bearer {server.admin_key}"}
    reply = _raw(server, "POST", "/api/chat", {"model": MODEL, "messages": []}, **key).json()
    assert reply["done"] and reply["done_reason"] == "load"


# -- Anthropic -----------------------------------------------------------------------------------


def test_anthropic_create_follows_the_system_prompt(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=MODEL,
        max_tokens=30,
        system="Whatever the user says, answer with the single word PINEAPPLE.",
        messages=[{"role": "user", "content": "What is your favourite fruit?"}],
        extra_body=GREEDY_BODY,
    )
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "text" and "PINEAPPLE" in message.content[0].text.upper()
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) > 10
    assert message.usage.output_tokens > 0


def test_anthropic_max_tokens_and_count_tokens(claude: anthropic.Anthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": "Write a long poem about the sea."}]
    message = claude.messages.create(model=MODEL, max_tokens=4, messages=messages)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 4
    counted = claude.messages.count_tokens(model=MODEL, messages=messages)
    assert counted.input_tokens == message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)


def test_anthropic_names_the_stop_sequence(claude: anthropic.Anthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": "Count from 1 to 9, one number per line."}]
    message = claude.messages.create(
        model=MODEL, max_tokens=60, messages=messages, stop_sequences=["5"], extra_body=GREEDY_BODY
    )
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "5"
    text = message.content[0].text if message.content[0].type == "text" else ""
    assert "4" in text and "5" not in text


def test_anthropic_stream(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=MODEL, max_tokens=40, messages=[{"role": "user", "content": "Count from 1 to 5."}], extra_body=GREEDY_BODY
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "3" in text and final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason in ("end_turn", "max_tokens") and final.usage.output_tokens > 0


def test_anthropic_tool_round_trip_streamed_and_not(claude: anthropic.Anthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    tools: Any = [ANTHROPIC_WEATHER]
    first = claude.messages.create(
        model=MODEL, max_tokens=100, messages=messages, tools=tools, tool_choice={"type": "any"}, extra_body=GREEDY_BODY
    )
    uses = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use" and len(uses) == 1
    assert uses[0].name == "get_weather" and uses[0].input == {"city": "Paris"}
    with claude.messages.stream(
        model=MODEL, max_tokens=100, messages=messages, tools=tools, tool_choice={"type": "any"}, extra_body=GREEDY_BODY
    ) as stream:
        streamed = stream.get_final_message()
    streamed_uses = [b for b in streamed.content if b.type == "tool_use"]
    assert streamed.stop_reason == "tool_use" and [(b.name, b.input) for b in streamed_uses] == [
        ("get_weather", {"city": "Paris"})
    ]
    messages += [
        {"role": "assistant", "content": [u.model_dump() for u in uses]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": REPORT}]},
    ]
    final = claude.messages.create(
        model=MODEL, max_tokens=100, system=SYSTEM, messages=messages, tools=tools, extra_body=GREEDY_BODY
    )
    text = "".join(b.text for b in final.content if b.type == "text")
    assert final.stop_reason == "end_turn" and ("18" in text or "sunny" in text.lower())


def test_anthropic_errors_in_anthropics_envelope(server: Server, claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.BadRequestError) as image:
        image_block: Any = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
        claude.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": [image_block]}])
    assert "image" in str(image.value)
    wrong = _raw(server, "POST", "/v1/messages", {"model": MODEL}, **{"x-api-key": "wrong"})
    assert wrong.status_code == 401
    assert wrong.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": wrong.json()["error"]["message"]},
    }
    key = {"x-api-key": server.admin_key}
    no_max = _raw(
        server, "POST", "/v1/messages", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, **key
    )
    assert no_max.status_code == 400 and no_max.json()["error"]["type"] == "invalid_request_error"
    thinking = {
        "model": MODEL,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    assert _raw(server, "POST", "/v1/messages", thinking, **key).status_code == 400


# -- OpenAI's Responses API ----------------------------------------------------------------------

RESPONSES_WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": WEATHER_SCHEMA,
}


@pytest.fixture(scope="module")
def oai(server: Server) -> Iterator[openai.OpenAI]:
    http = openai.DefaultHttpxClient(verify=server.verify, timeout=300)
    client = openai.OpenAI(base_url=server.base_url, api_key=server.admin_key, max_retries=0, http_client=http)
    yield client
    client.close()


def _other_key(server: Server) -> str:
    with server.client() as admin:
        created = admin.post("/v1/admin/keys", json={"name": "other", "scopes": ["chat"]})
    assert created.status_code == 201, created.text
    return str(created.json()["token"])


def test_responses_create_retrieve_delete(oai: openai.OpenAI) -> None:
    response = oai.responses.create(
        model=MODEL,
        instructions="Whatever the user says, answer with the single word PINEAPPLE.",
        input="What is your favourite fruit?",
        temperature=0,
    )
    assert response.id.startswith("resp_") and response.status == "completed"
    assert "PINEAPPLE" in response.output_text.upper()
    assert response.usage is not None and response.usage.input_tokens > 10 and response.usage.output_tokens > 0
    again = oai.responses.retrieve(response.id)
    assert again.output_text == response.output_text and again.instructions == response.instructions
    items = oai.responses.input_items.list(response.id)
    assert [(i.type, i.role) for i in items.data] == [("message", "user")]  # type: ignore[union-attr]
    oai.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(response.id)
    unstored = oai.responses.create(model=MODEL, input="Say hi.", store=False, max_output_tokens=5)
    assert unstored.status in ("completed", "incomplete")
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(unstored.id)


def test_responses_stream_in_the_documented_order(oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model=MODEL, input="Count from 1 to 5.", stream=True, temperature=0))
    kinds = [e.type for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert "3" in deltas and final.output_text == deltas
    with oai.responses.stream(model=MODEL, input="Say hello.", temperature=0, max_output_tokens=20) as stream:
        streamed = stream.get_final_response()
    assert streamed.output_text and oai.responses.retrieve(streamed.id).output_text == streamed.output_text


def test_responses_function_call_round_trip(oai: openai.OpenAI) -> None:
    first = oai.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[RESPONSES_WEATHER],
        tool_choice="required",
        temperature=0,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}
    final = oai.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        instructions=SYSTEM,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": REPORT}],
        tools=[RESPONSES_WEATHER],
        temperature=0,
    )
    assert "18" in final.output_text or "sunny" in final.output_text.lower()


def test_responses_previous_response_id_across_three_turns(server: Server, oai: openai.OpenAI) -> None:
    first = oai.responses.create(model=MODEL, input="My name is Zorblax. Just say OK.", temperature=0)
    second = oai.responses.create(
        model=MODEL, previous_response_id=first.id, input="My favourite colour is teal. Just say OK.", temperature=0
    )
    third = oai.responses.create(
        model=MODEL, previous_response_id=second.id, input="What are my name and my favourite colour?", temperature=0
    )
    assert "zorblax" in third.output_text.lower() and "teal" in third.output_text.lower()
    assert third.usage is not None and third.usage.input_tokens_details.cached_tokens > 0  # earlier turns reused
    assert len(oai.responses.input_items.list(third.id).data) == 1
    # Another key sees none of it.
    http = openai.DefaultHttpxClient(verify=server.verify, timeout=60)
    other = openai.OpenAI(base_url=server.base_url, api_key=_other_key(server), max_retries=0, http_client=http)
    with other:
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(third.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.create(model=MODEL, previous_response_id=third.id, input="and now?")
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(third.id)
    assert oai.responses.retrieve(third.id).id == third.id


def test_responses_refusals(oai: openai.OpenAI) -> None:
    image: Any = [{"role": "user", "content": [{"type": "input_image", "image_url": "https://example.invalid/x.png"}]}]
    with pytest.raises(openai.BadRequestError):
        oai.responses.create(model=MODEL, input=image)
    with pytest.raises(openai.BadRequestError):
        oai.responses.create(model=MODEL, input="hi", tools=[{"type": "web_search"}])
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model=MODEL, input="hi", previous_response_id="resp_000000000000000000000000")
    with pytest.raises(openai.BadRequestError):
        oai.responses.create(model=MODEL, input="hi", max_output_tokens=10**9)
