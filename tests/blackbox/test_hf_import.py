"""A real HuggingFace causal-LM directory (safetensors) imported into the store and served by the
transformers backend through the real server: chat, streaming, and its versions listing."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.blackbox.test_model_repository import cli_fails, cli_ok
from tests.helpers import CHAT_MODEL, START_TIMEOUT_S, running_server


def hf_dir() -> Path:
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        if os.environ.get("MOLTBOT_REQUIRE_TOOLS"):
            pytest.fail("torch and transformers are required (MOLTBOT_REQUIRE_TOOLS is set)")
        pytest.skip("torch and transformers are not installed (pip install 'moltbot[hf]')")
    from tests.hfmodel import hf_model_dir

    return hf_model_dir()


def test_import_a_huggingface_directory_and_chat_with_it(make_data_dir: Callable[..., Path]) -> None:
    source = hf_dir()
    data_dir = make_data_dir("hf-import")
    out = cli_ok(data_dir, "models", "import", str(source), "--name", "gemma-hf")
    assert "as gemma-hf version 1" in out
    env = {"MOLTBOT_MONITOR": "false", "MOLTBOT_MODELS": json.dumps(["gemma-hf", CHAT_MODEL])}
    with running_server(data_dir, env) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        with server.client(timeout=300) as client:
            ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
            assert "gemma-hf" in ids
            listed = client.get("/v1/admin/models/gemma-hf/versions").json()["data"]
            assert listed[0]["format"] == "hf-causal" and listed[0]["load_state"] == "loaded"
            messages = [{"role": "user", "content": "What is the capital of France?"}]
            body = {"model": "gemma-hf", "messages": messages, "max_tokens": 12, "temperature": 0}
            reply = client.post("/v1/chat/completions", json=body)
            assert reply.status_code == 200, reply.text
            answer = reply.json()
            assert answer["choices"][0]["message"]["content"].strip()
            assert answer["usage"]["completion_tokens"] >= 1
            events = []
            with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as streamed:
                assert streamed.status_code == 200
                events = [line[6:] for line in streamed.iter_lines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            text = "".join(
                json.loads(e)["choices"][0]["delta"].get("content") or ""
                for e in events[:-1]
                if json.loads(e)["choices"]
            )
            assert text == answer["choices"][0]["message"]["content"]  # greedy: the same answer streamed
            grammar = client.post("/v1/chat/completions", json={**body, "response_format": {"type": "json_object"}})
            assert grammar.status_code == 400


def test_pickle_directories_are_refused(make_data_dir: Callable[..., Path], tmp_path: Path) -> None:
    data_dir = make_data_dir("hf-pickle")
    model = tmp_path / "pickled"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["GemmaForCausalLM"]}))
    (model / "model.pt").write_bytes(b"\x80\x04")
    assert "pickle weights are refused" in cli_fails(data_dir, "models", "import", str(model))
