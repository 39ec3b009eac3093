"""Conversations taking turns: TTFT by turn number, Moltbot vs `python -m llama_cpp.server`, same run.

32 conversations take turns round-robin, 10 turns each; each turn adds about 50 user tokens to the
history the client resends (as any OpenAI client does) and asks for 16 tokens at temperature 0.
Moltbot keeps each conversation's KV state (in a slot, or in the host-memory tier) and evaluates only
the new tokens; the peer keeps one prompt cache, so with two or more conversations taking turns it
recomputes every history. Its per-turn cost does not depend on how many conversations there are
(beyond one), so it runs fewer of them (--peer-conversations) to keep the benchmark short.

    .venv/bin/python bench/multiturn.py [--conversations 32] [--turns 10] [--peer-conversations 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import ssl
import statistics
import sys
import tempfile
import time

import httpx
from common import BUNDLED_CHAT_MODEL, percentile, prepare_data_dir, start_peer, stop

from tests.helpers import running_server

WORDS = [
    "river",
    "garden",
    "window",
    "morning",
    "silver",
    "quiet",
    "market",
    "yellow",
    "travel",
    "winter",
    "paper",
    "coffee",
    "mountain",
    "station",
    "letter",
    "orange",
    "summer",
    "bridge",
    "forest",
    "music",
    "evening",
    "harbor",
    "candle",
    "story",
    "pocket",
    "meadow",
    "village",
    "thunder",
]
MAX_TOKENS = 16


def user_turn(rng: random.Random) -> str:
    # About 50 tokens: 40 common words and a question.
    return "Please remember these words: " + " ".join(rng.choice(WORDS) for _ in range(40)) + ". What was the first?"


def ttft(client: httpx.Client, model: str, messages: list[dict[str, str]]) -> tuple[float, str]:
    body = {"model": model, "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
    started = time.perf_counter()
    first = 0.0
    pieces = []
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            for choice in json.loads(line[6:]).get("choices") or []:
                text = choice.get("delta", {}).get("content") or ""
                if text:
                    first = first or time.perf_counter()
                    pieces.append(text)
    return (first or time.perf_counter()) - started, "".join(pieces)


def take_turns(
    url: str,
    headers: dict[str, str],
    model: str,
    conversations: int,
    turns: int,
    *,
    verify: ssl.SSLContext | bool = True,
) -> dict[int, list[float]]:
    rng = random.Random(7)
    histories: list[list[dict[str, str]]] = [[] for _ in range(conversations)]
    by_turn: dict[int, list[float]] = {t: [] for t in range(1, turns + 1)}
    with httpx.Client(base_url=url, headers=headers, timeout=600, verify=verify) as client:
        for turn in range(1, turns + 1):
            for history in histories:
                history.append({"role": "user", "content": user_turn(rng)})
                seconds, answer = ttft(client, model, history)
                history.append({"role": "assistant", "content": answer})
                by_turn[turn].append(seconds)
    return by_turn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=32)
    parser.add_argument("--peer-conversations", type=int, default=4)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--fast-too", action="store_true", help="also run Moltbot with MOLTBOT_EXACT_CACHE=false")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="moltbot-bench-") as tmp:
        data_dir, model_path, key = prepare_data_dir(tmp, "chat,models:read,metrics")
        headers = {"Authorization": f"Bearer {key}"}
        env = {"MOLTBOT_THREADS": str(args.threads), "MOLTBOT_CONTEXT_SIZE": str(args.context)}
        with running_server(data_dir, env) as server:
            ours = take_turns(
                server.url, headers, BUNDLED_CHAT_MODEL, args.conversations, args.turns, verify=server.verify
            )
            metrics = server.get("/metrics", headers=headers).text
        fast: dict[int, list[float]] = {}
        if args.fast_too:
            with running_server(data_dir, {**env, "MOLTBOT_EXACT_CACHE": "false"}) as server:
                fast = take_turns(
                    server.url, headers, BUNDLED_CHAT_MODEL, args.conversations, args.turns, verify=server.verify
                )
        peer, url = start_peer(model_path, args.threads, args.context, 512)
        try:
            theirs = take_turns(url, {}, "peer", args.peer_conversations, args.turns)
        finally:
            stop(peer)

    shape = f"{args.turns} turns, ~50 user tokens a turn, {MAX_TOKENS} answer tokens, threads {args.threads}"
    print(f"\nmulti-turn: moltbot {args.conversations} conversations, peer {args.peer_conversations}, {shape}\n")
    fast_head = " moltbot fast-mode TTFT p50 |" if fast else ""
    print(f"| turn | moltbot TTFT p50 |{fast_head} peer TTFT p50 | peer / moltbot |")
    print("|---|---|---|---|" + ("---|" if fast else ""))
    for turn in range(1, args.turns + 1):
        a, b = statistics.median(ours[turn]), statistics.median(theirs[turn])
        fast_cell = f" {statistics.median(fast[turn]) * 1000:.0f} ms |" if fast else ""
        print(f"| {turn} | {a * 1000:.0f} ms |{fast_cell} {b * 1000:.0f} ms | {b / a:.1f}x |")
    late_ours = [s for t in range(5, args.turns + 1) for s in ours[t]]
    late_theirs = [s for t in range(5, args.turns + 1) for s in theirs[t]]
    ratio = percentile(late_theirs, 50) / percentile(late_ours, 50)
    growth = statistics.median(ours[args.turns]) / statistics.median(ours[1])
    ours_ms, theirs_ms = percentile(late_ours, 50) * 1000, percentile(late_theirs, 50) * 1000
    print(f"\nturns >= 5, TTFT p50: moltbot {ours_ms:.0f} ms, peer {theirs_ms:.0f} ms: {ratio:.1f}x (target >= 5x)")
    print(f"moltbot turn {args.turns} / turn 1 TTFT p50: {growth:.2f}x (target <= 1.3x)")
    if fast:
        fast_growth = statistics.median(fast[args.turns]) / statistics.median(fast[1])
        print(f"fast mode turn {args.turns} / turn 1: {fast_growth:.2f}x")
    wanted = ("moltbot_engine_cache_hits_total", "moltbot_engine_cache_reused_tokens_total",
              "moltbot_engine_prompt_tokens_total", "moltbot_engine_host_cache_restores_total")  # fmt: skip
    for line in metrics.splitlines():
        if line.startswith(wanted):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
