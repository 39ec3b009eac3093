"""Continuous batching through the real server: concurrency, equivalence, cancellation, prefix reuse."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from moltbot.engine.scheduler import EXACT_MIN_PIECE
from tests.helpers import CHAT_MODEL, START_TIMEOUT_S, Server, running_server


@pytest.fixture(scope="module")
def batch_server(make_data_dir: Callable[..., Path]) -> Iterator[Server]:
    with running_server(make_data_dir("batching"), {"MOLTBOT_PARALLEL": "8"}) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield server


def engine_metrics(server: Server) -> dict[str, float]:
    with server.client() as client:
        text = client.get("/metrics").text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") == CHAT_MODEL:
                values[sample.name] = sample.value
    return values


def stream_text(server: Server, body: dict[str, object]) -> tuple[str, list[dict[str, object]]]:
    with server.client() as client, client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    text = "".join(str(e["choices"][0]["text"]) for e in events if e["choices"])  # type: ignore[index]
    return text, events


PROMPTS = [f"Question: What is {a} plus {b}?\nAnswer:" for a, b in zip(range(2, 10), range(11, 19), strict=True)]


def _body(prompt: str) -> dict[str, object]:
    return {"model": CHAT_MODEL, "prompt": prompt, "max_tokens": 24, "temperature": 0, "stream": True}


def _concurrently(server: Server, prompts: list[str]) -> dict[int, tuple[str, list[dict[str, object]]]]:
    results: dict[int, tuple[str, list[dict[str, object]]]] = {}

    def run(index: int) -> None:
        results[index] = stream_text(server, _body(prompts[index]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == len(prompts)
    return results


def test_eight_concurrent_streams_all_finish(batch_server: Server) -> None:
    solo = [stream_text(batch_server, _body(p))[0] for p in PROMPTS]
    results = _concurrently(batch_server, PROMPTS)
    for text, events in results.values():
        assert text
        assert len({e["id"] for e in events}) == 1
        assert all(e["object"] == "text_completion" for e in events)
        assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")  # type: ignore[index]
    # With eight or more sequences in a decode step llama.cpp's CPU kernels switch to tiled matrix
    # products, whose sums are ordered differently than a solo run's (tests/engine/test_batch_numerics.py
    # shows it, and that outputs part only at near-ties), so a batched greedy text may leave its solo
    # text; which ones is reported. Seven or fewer are asserted exact below.
    differing = [i for i, (text, _) in results.items() if text != solo[i]]
    print(f"batched requests that differ from their solo run: {differing}")


def test_seven_concurrent_streams_match_their_solo_runs(batch_server: Server) -> None:
    """Up to seven rows a decode step runs the same row-by-row kernels as a solo run, and every prompt is
    read in a piece of its own: exact at temperature 0."""
    prompts = PROMPTS[:7]
    for prompt in prompts:  # once computed, each prompt is then found cached by both runs below
        stream_text(batch_server, _body(prompt))
    solo = [stream_text(batch_server, _body(p))[0] for p in prompts]
    results = _concurrently(batch_server, prompts)
    assert [results[i][0] for i in range(7)] == solo


def test_a_disconnected_stream_frees_its_sequence(batch_server: Server) -> None:
    before = engine_metrics(batch_server)
    body = {"model": CHAT_MODEL, "prompt": "1, 2, 3, 4,", "max_tokens": 3000, "temperature": 0, "stream": True}
    with batch_server.client() as client, client.stream("POST", "/v1/completions", json=body) as response:
        for _ in zip(range(3), response.iter_lines(), strict=False):
            pass
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        after = engine_metrics(batch_server)
        if after["moltbot_engine_sequences_running"] == 0:
            break
        time.sleep(0.05)
    assert after["moltbot_engine_sequences_running"] == 0
    assert after["moltbot_engine_sequences_cancelled_total"] == before["moltbot_engine_sequences_cancelled_total"] + 1
    assert after["moltbot_engine_requests_in_flight"] == 0
    assert after["moltbot_engine_generated_tokens_total"] - before["moltbot_engine_generated_tokens_total"] < 200


def test_turn_two_reuses_turn_one(batch_server: Server) -> None:
    turn1 = [{"role": "user", "content": "Name a large animal that lives in Africa."}]
    with batch_server.client() as client:
        first = client.post(
            "/v1/chat/completions", json={"model": CHAT_MODEL, "messages": turn1, "temperature": 0, "max_tokens": 20}
        ).json()
        prompt_tokens = first["usage"]["prompt_tokens"]
        turn2 = [*turn1, first["choices"][0]["message"], {"role": "user", "content": "And a small one?"}]
        before = engine_metrics(batch_server)
        warm = client.post(
            "/v1/chat/completions", json={"model": CHAT_MODEL, "messages": turn2, "temperature": 0, "max_tokens": 20}
        ).json()
        after = engine_metrics(batch_server)
    reused = after["moltbot_engine_cache_reused_tokens_total"] - before["moltbot_engine_cache_reused_tokens_total"]
    assert reused >= prompt_tokens
    assert after["moltbot_engine_cache_hits_total"] == before["moltbot_engine_cache_hits_total"] + 1
    assert warm["usage"]["prompt_tokens"] > prompt_tokens


def _take_turns(server: Server, *, recompute: bool) -> list[str]:
    """Three conversations taking turns (four each); with `recompute`, each turn starts from nothing."""
    conversations = [[{"role": "user", "content": f"Tell me a fact about the number {n}."}] for n in (3, 7, 11)]
    answers = []
    with server.client() as client:
        for _ in range(4):
            for history in conversations:
                if recompute:  # an unrelated prompt takes the only slot: nothing of this one is cached
                    client.post("/v1/completions", json={"model": CHAT_MODEL, "prompt": "reset", "max_tokens": 1})
                body = {"model": CHAT_MODEL, "messages": history, "temperature": 0, "max_tokens": 16}
                answer = str(client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"])
                answers.append(answer)
                history += [{"role": "assistant", "content": answer}, {"role": "user", "content": "Tell me another."}]
    return answers


def _answers(
    make_data_dir: Callable[..., Path], env: dict[str, str], *, recompute: bool = False
) -> tuple[list[str], dict[str, float]]:
    with running_server(make_data_dir("turns"), env) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        answers = _take_turns(server, recompute=recompute)
        return answers, engine_metrics(server)


@pytest.fixture(scope="module")
def cached_reference(make_data_dir: Callable[..., Path]) -> list[str]:
    """Three slots for three conversations: each turn finds its whole history in its own slot."""
    answers, metrics = _answers(make_data_dir, {"MOLTBOT_PARALLEL": "3", "MOLTBOT_KV_CACHE_BYTES": "0"})
    assert metrics["moltbot_engine_cache_hits_total"] == 9  # every turn after the first of each
    return answers


@pytest.fixture(scope="module")
def recomputed_reference(make_data_dir: Callable[..., Path]) -> list[str]:
    """One slot, no host tier, an unrelated prompt between turns: every turn computed from nothing."""
    env = {"MOLTBOT_PARALLEL": "1", "MOLTBOT_KV_CACHE_BYTES": "0"}
    answers, metrics = _answers(make_data_dir, env, recompute=True)
    assert metrics["moltbot_engine_cache_hits_total"] == 0
    return answers


@pytest.mark.parametrize("slots", ["1", "2"])
def test_host_tier_restores_give_the_same_tokens_as_staying_in_a_slot(
    make_data_dir: Callable[..., Path], cached_reference: list[str], slots: str
) -> None:
    """A conversation evicted to host memory and restored answers exactly as if it had kept its slot."""
    answers, metrics = _answers(make_data_dir, {"MOLTBOT_PARALLEL": slots})
    assert answers == cached_reference
    assert metrics["moltbot_engine_host_cache_restores_total"] > 0


def test_tiny_host_budget_recomputes_exactly(
    make_data_dir: Callable[..., Path], recomputed_reference: list[str]
) -> None:
    """With no room to keep a state, evicted conversations are recomputed: the same tokens."""
    budget = "100000"  # smaller than one conversation's KV state
    answers, metrics = _answers(make_data_dir, {"MOLTBOT_PARALLEL": "1", "MOLTBOT_KV_CACHE_BYTES": budget})
    assert answers == recomputed_reference
    assert all(answers)
    assert metrics["moltbot_engine_host_cache_restores_total"] == 0
    assert metrics["moltbot_engine_host_cache_bytes"] <= int(budget)


def test_cached_turns_give_exactly_the_tokens_of_recomputed_ones(
    cached_reference: list[str], recomputed_reference: list[str]
) -> None:
    """Exact mode (the default): every turn that found its history cached answers token for token as the
    same turn computed from nothing."""
    assert cached_reference == recomputed_reference


def test_without_exact_mode_cached_turns_can_part_at_near_ties(
    make_data_dir: Callable[..., Path], recomputed_reference: list[str]
) -> None:
    """MOLTBOT_EXACT_CACHE=false reuses the answer's KV (computed a token at a time, by another kernel)
    and the CPU's repacked weights: faster, and the logits differ in their last bits
    (tests/engine/test_batch_numerics.py), so an answer can part from the recomputed one at a near-tie.
    Reported, not asserted equal."""
    env = {"MOLTBOT_PARALLEL": "3", "MOLTBOT_KV_CACHE_BYTES": "0", "MOLTBOT_EXACT_CACHE": "false"}
    answers, metrics = _answers(make_data_dir, env)
    assert metrics["moltbot_engine_cache_hits_total"] == 9
    differing = [i for i, (a, b) in enumerate(zip(answers, recomputed_reference, strict=True)) if a != b]
    print(f"turns where fast-mode cached and recomputed answers differ: {differing}")
    assert all(answers) and len(differing) <= len(answers) // 2


def test_metrics_need_the_metrics_scope(batch_server: Server) -> None:
    assert batch_server.get("/metrics").status_code == 401


def test_n_choices_share_the_prompt(batch_server: Server) -> None:
    messages = [{"role": "user", "content": "Write one sentence about the sea and the wind."}]
    with batch_server.client() as client:
        single = client.post(
            "/v1/chat/completions", json={"model": CHAT_MODEL, "messages": messages, "max_tokens": 12, "n": 1}
        ).json()
        before = engine_metrics(batch_server)
        body = {"model": CHAT_MODEL, "messages": messages, "max_tokens": 12, "n": 3, "seed": 5}
        reply = client.post("/v1/chat/completions", json=body).json()
        after = engine_metrics(batch_server)
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2]
    assert all(c["message"]["content"] and c["finish_reason"] in ("stop", "length") for c in reply["choices"])
    assert len({c["message"]["content"] for c in reply["choices"]}) > 1  # seeds 5, 6 and 7
    assert reply["usage"]["prompt_tokens"] == single["usage"]["prompt_tokens"]
    prompt = single["usage"]["prompt_tokens"]
    copied = after["moltbot_engine_cache_reused_tokens_total"] - before["moltbot_engine_cache_reused_tokens_total"]
    # The two copies took the computed prompt but its last piece (exact mode reads one again).
    assert copied >= 2 * (prompt - EXACT_MIN_PIECE)


def test_n_choices_stream(batch_server: Server) -> None:
    body = {
        "model": CHAT_MODEL,
        "prompt": "Once upon a time",
        "max_tokens": 8,
        "n": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    _, events = stream_text(batch_server, body)
    finishes = {
        e["choices"][0]["index"]: e["choices"][0]["finish_reason"]
        for e in events
        if e["choices"] and e["choices"][0]["finish_reason"]
    }  # type: ignore[index]
    assert set(finishes) == {0, 1}
    usage = events[-1]["usage"]
    assert isinstance(usage, dict) and usage["completion_tokens"] <= 16


def test_n_over_the_limit_is_refused(batch_server: Server) -> None:
    with batch_server.client() as client:
        response = client.post("/v1/completions", json={"model": CHAT_MODEL, "prompt": "hi", "n": 9})
    assert response.status_code == 400 and response.json()["error"]["param"] == "n"
