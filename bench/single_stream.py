"""Single-stream latency and decode speed: Moltbot vs `python -m llama_cpp.server`, same GGUF, same run.

Both servers get the same model file, threads, context and batch size. Each request is a ~128-token
prompt (a count that starts at a different number each time, so no prompt cache helps either side)
and generates exactly 128 tokens at temperature 0. Prints TTFT p50/p95, decode tokens/s, end-to-end
latency, and Moltbot's gateway overhead (server time minus engine time, from Server-Timing).

    .venv/bin/python bench/single_stream.py [--requests 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

import httpx
from common import BUNDLED_CHAT_MODEL, PromptMaker, percentile, prepare_data_dir, start_peer, stop

from tests.helpers import running_server

GENERATED = 128
PROMPT_TOKENS = 128
WARMUP = 2


@dataclass
class Samples:
    ttft: list[float] = field(default_factory=list)
    decode_tps: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)


def stream_once(client: httpx.Client, model: str, prompt: str) -> tuple[float, float, float, int]:
    body = {"model": model, "prompt": prompt, "max_tokens": GENERATED, "temperature": 0, "stream": True}
    started = time.perf_counter()
    first = last = 0.0
    pieces = 0
    with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if choices and choices[0].get("text"):
                last = time.perf_counter()
                first = first or last
                pieces += 1
    return first - started, last - first, last - started, pieces


def measure(client: httpx.Client, model: str, requests: int, prompts: PromptMaker) -> Samples:
    samples = Samples()
    for i in range(requests + WARMUP):
        ttft, decode, e2e, pieces = stream_once(client, model, prompts.make(1000 + 97 * i))
        if i < WARMUP:
            continue
        samples.ttft.append(ttft)
        samples.decode_tps.append((pieces - 1) / decode if decode > 0 else 0.0)
        samples.e2e.append(e2e)
        samples.tokens.append(pieces)
    return samples


def gateway_overhead(client: httpx.Client, model: str, requests: int, prompts: PromptMaker) -> list[float]:
    """Server time to the response start minus engine time, for small non-streamed requests (ms)."""
    overheads = []
    for i in range(requests + WARMUP):
        body = {"model": model, "prompt": prompts.make(5000 + i), "max_tokens": 4, "temperature": 0}
        response = client.post("/v1/completions", json=body)
        response.raise_for_status()
        timing = dict(part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
        if i >= WARMUP:
            overheads.append(float(timing["total"]) - float(timing["engine"]))
    return overheads


def row(name: str, ours: float, peer: float | None, unit: str, higher_is_better: bool) -> str:
    if peer is None:
        return f"| {name} | {ours:.2f} {unit} | - | - |"
    ratio = ours / peer if peer else float("nan")
    better = "higher is better" if higher_is_better else "lower is better"
    return f"| {name} | {ours:.2f} {unit} | {peer:.2f} {unit} | {ratio:.2f}x ({better}) |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="moltbot-bench-") as tmp:
        data_dir, model_path, key = prepare_data_dir(tmp, "chat,models:read")
        prompts = PromptMaker(model_path, PROMPT_TOKENS)
        env = {
            "MOLTBOT_THREADS": str(args.threads),
            "MOLTBOT_CONTEXT_SIZE": str(args.context),
            "MOLTBOT_BATCH_SIZE": str(args.batch),
        }
        with running_server(data_dir, env) as server, server.client(key, timeout=300) as client:
            ours = measure(client, BUNDLED_CHAT_MODEL, args.requests, prompts)
            overhead = gateway_overhead(client, BUNDLED_CHAT_MODEL, args.requests, prompts)
        peer_process, url = start_peer(model_path, args.threads, args.context, args.batch)
        try:
            with httpx.Client(base_url=url, timeout=300) as client:
                peer = measure(client, "peer", args.requests, prompts)
        finally:
            stop(peer_process)

    print(f"\nsingle stream: {args.requests} requests each (+{WARMUP} warm-up), ~{PROMPT_TOKENS} prompt tokens, "
          f"{GENERATED} generated, temperature 0, threads {args.threads}, context {args.context}\n")  # fmt: skip
    print("| metric | moltbot | llama_cpp.server | moltbot / peer |")
    print("|---|---|---|---|")
    print(row("TTFT p50", percentile(ours.ttft, 50) * 1000, percentile(peer.ttft, 50) * 1000, "ms", False))
    print(row("TTFT p95", percentile(ours.ttft, 95) * 1000, percentile(peer.ttft, 95) * 1000, "ms", False))
    decode_ours, decode_peer = statistics.median(ours.decode_tps), statistics.median(peer.decode_tps)
    print(row("decode tokens/s (median)", decode_ours, decode_peer, "tok/s", True))
    print(row("end-to-end p50", percentile(ours.e2e, 50) * 1000, percentile(peer.e2e, 50) * 1000, "ms", False))
    print(row("end-to-end p95", percentile(ours.e2e, 95) * 1000, percentile(peer.e2e, 95) * 1000, "ms", False))
    print(row("gateway overhead p50", percentile(overhead, 50), None, "ms", False))
    print(row("gateway overhead p99", percentile(overhead, 99), None, "ms", False))
    print(f"\ntokens streamed per request: moltbot {min(ours.tokens)}-{max(ours.tokens)}, "
          f"peer {min(peer.tokens)}-{max(peer.tokens)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
