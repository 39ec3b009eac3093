"""logprobs, top_logprobs and logit_bias through the real server, in OpenAI's shapes, streamed and not."""

from __future__ import annotations

import json
import math
from typing import Any

import llama_cpp
import pytest

from moltbot.models.store import ModelStore
from tests.blackbox.test_errors import assert_envelope
from tests.helpers import CHAT_MODEL, Server

CHAT = "/v1/chat/completions"
ASK = [{"role": "user", "content": "Name a colour."}]
GREEDY = {"model": CHAT_MODEL, "messages": ASK, "max_tokens": 8, "temperature": 0, "logprobs": True}


def _check_entry(entry: dict[str, Any], top: int) -> None:
    assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
    assert entry["logprob"] <= 0 and bytes(entry["bytes"]).decode("utf-8", "replace") == entry["token"]
    alternatives = entry["top_logprobs"]
    assert len(alternatives) == top
    values = [a["logprob"] for a in alternatives]
    assert values == sorted(values, reverse=True)  # most likely first
    assert sum(math.exp(v) for v in values) <= 1.0 + 1e-6
    if top:
        # The chosen token is among the alternatives, or less likely than all of them.
        chosen = [a for a in alternatives if a["token"] == entry["token"]]
        assert (chosen and chosen[0]["logprob"] == pytest.approx(entry["logprob"])) or entry["logprob"] <= values[-1]


def test_chat_logprobs_shape_and_greedy_consistency(server: Server) -> None:
    body = {**GREEDY, "top_logprobs": 5}
    with server.client() as client:
        reply = client.post(CHAT, json=body).json()
    choice = reply["choices"][0]
    content = choice["logprobs"]["content"]
    assert choice["logprobs"]["refusal"] is None and len(content) == reply["usage"]["completion_tokens"]
    # The tokens as generated (this base model's transcript template drops the answer's leading space).
    assert "".join(e["token"] for e in content).removeprefix(" ") == choice["message"]["content"]
    for entry in content:
        _check_entry(entry, 5)
        assert entry["top_logprobs"][0]["token"] == entry["token"]  # greedy: the chosen token is the likeliest


def test_chat_logprobs_streamed_match(server: Server) -> None:
    body = {**GREEDY, "top_logprobs": 2}
    with server.client() as client:
        whole = client.post(CHAT, json=body).json()["choices"][0]["logprobs"]["content"]
        with client.stream("POST", CHAT, json={**body, "stream": True}) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    streamed = [e for ev in events for c in ev["choices"] if c["logprobs"] for e in c["logprobs"]["content"]]
    assert [e["token"] for e in streamed] == [e["token"] for e in whole]
    assert [e["logprob"] for e in streamed] == pytest.approx([e["logprob"] for e in whole], abs=1e-4)


def test_completion_logprobs_shape(server: Server) -> None:
    body = {"model": CHAT_MODEL, "prompt": "The sky is", "max_tokens": 5, "temperature": 0, "logprobs": 3}
    with server.client() as client:
        choice = client.post("/v1/completions", json=body).json()["choices"][0]
        with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    logprobs = choice["logprobs"]
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) == len(logprobs["tokens"])
    assert all(len(top) <= 3 for top in logprobs["top_logprobs"])
    assert logprobs["text_offset"][0] == 0 and logprobs["text_offset"] == sorted(logprobs["text_offset"])
    streamed = [t for e in events for c in e["choices"] if c["logprobs"] for t in c["logprobs"]["tokens"]]
    assert streamed == logprobs["tokens"]


def test_logit_bias_bans_and_forces_tokens(server: Server) -> None:
    vocab = llama_cpp.Llama(
        model_path=str(ModelStore(server.data_dir / "models").source(CHAT_MODEL).path), vocab_only=True, verbose=False
    )
    body = {"model": CHAT_MODEL, "prompt": "The capital of France is", "max_tokens": 3, "temperature": 0}
    with server.client() as client:
        plain = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
        first = vocab.tokenize(plain.encode(), add_bos=False)[0]
        banned = client.post("/v1/completions", json={**body, "logit_bias": {str(first): -100}}).json()
        forced_token = vocab.tokenize(b" banana", add_bos=False)[0]
        forced = client.post("/v1/completions", json={**body, "logit_bias": {str(forced_token): 100}}).json()
    assert vocab.tokenize(banned["choices"][0]["text"].encode(), add_bos=False)[0] != first
    assert forced["choices"][0]["text"].startswith(vocab.detokenize([forced_token]).decode())


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": ASK, "top_logprobs": 2}, "top_logprobs"),
        ({"messages": ASK, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"messages": ASK, "logit_bias": {"abc": 1}}, "logit_bias"),
        ({"messages": ASK, "logit_bias": {"999999999": 1}}, "logit_bias"),
        ({"messages": ASK, "logit_bias": {"5": 101}}, "logit_bias.5"),
    ],
)
def test_bad_logprob_requests_are_400s(server: Server, body: dict[str, Any], param: str) -> None:
    with server.client() as client:
        assert_envelope(client.post(CHAT, json={"model": CHAT_MODEL, **body}), 400, param=param)


def test_suffix_needs_a_model_with_fim_tokens(server: Server) -> None:
    body = {"model": CHAT_MODEL, "prompt": "def f(", "suffix": "\n    return x"}
    with server.client() as client:
        error = assert_envelope(client.post("/v1/completions", json=body), 400, param="suffix")
    assert "fill in the middle" in error["message"]
