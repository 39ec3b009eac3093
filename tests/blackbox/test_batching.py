"""Continuous batching through the real server: concurrency, equivalence, cancellation, prefix reuse."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

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
    # With three or more sequences in a step, llama.cpp's CPU kernels compute logits slightly
    # differently than for one (tests/engine/test_batch_numerics.py shows it, and that outputs part
    # only at near-ties), so a batched greedy text may leave its solo text; which ones is reported.
    differing = [i for i, (text, _) in results.items() if text != solo[i]]
    print(f"batched requests that differ from their solo run: {differing}")


def test_two_concurrent_streams_match_their_solo_runs(batch_server: Server) -> None:
    """One or two output rows use the same kernels as a solo run: exact at temperature 0."""
    prompts = PROMPTS[:2]
    solo = [stream_text(batch_server, _body(p))[0] for p in prompts]
    results = _concurrently(batch_server, prompts)
    assert [results[i][0] for i in range(2)] == solo


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


def test_slot_eviction_keeps_results_correct(make_data_dir: Callable[..., Path]) -> None:
    """Two slots, three conversations taking turns: every turn evicts another's cache and stays exact."""
    conversations = [[{"role": "user", "content": f"Tell me a fact about the number {n}."}] for n in (3, 7, 11)]
    with running_server(make_data_dir("evict"), {"MOLTBOT_PARALLEL": "2"}) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        with server.client() as client:

            def ask(messages: list[dict[str, str]]) -> str:
                body = {"model": CHAT_MODEL, "messages": messages, "temperature": 0, "max_tokens": 16}
                return str(client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"])

            for _ in range(3):
                for history in conversations:
                    history.append({"role": "assistant", "content": ask(history)})
                    history.append({"role": "user", "content": "Tell me another."})
            final = [ask(h) for h in conversations]
            hits = engine_metrics(server)["moltbot_engine_cache_hits_total"]
    # The same conversations computed from scratch, one at a time, in a fresh server.
    with running_server(make_data_dir("evict-cold"), {"MOLTBOT_PARALLEL": "1"}) as cold:
        cold.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        with cold.client() as client:
            for history, answer in zip(conversations, final, strict=True):
                client.post("/v1/completions", json={"model": CHAT_MODEL, "prompt": "reset", "max_tokens": 1})
                body = {"model": CHAT_MODEL, "messages": history, "temperature": 0, "max_tokens": 16}
                assert (
                    client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"] == answer
                )
    assert hits > 0


def test_metrics_need_the_metrics_scope(batch_server: Server) -> None:
    assert httpx.get(batch_server.url + "/metrics").status_code == 401
