"""Many clients at once: Moltbot vs `python -m llama_cpp.server`, same GGUF and threads, same run.

Closed loop: each client sends its next request when its last one ends, for a fixed time, clients
starting staggered. Each request is a ~200-token prompt (different for every request) and asks for
64-128 tokens at temperature 0, streamed. Reported over the steady state (each client's first request
excluded): aggregate generated tokens/s, TTFT p50/p99, errors (503s counted apart). Then Moltbot alone
in the minimal profile under 10 clients, for its peak RSS.

    .venv/bin/python bench/concurrency.py [--clients 1 4 10 32] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import ssl
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import httpx
import psutil
from common import BUNDLED_CHAT_MODEL, PromptMaker, percentile, prepare_data_dir, start_peer, stop

from tests.helpers import running_server

PROMPT_TOKENS = 200
STAGGER_S = 0.25


@dataclass
class Run:
    ttft: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0
    busy: int = 0
    requests: int = 0
    window: float = 0.0


async def one_request(
    client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int, arrivals: list[float]
) -> tuple[float, int]:
    """Stream one completion; token arrival times go to `arrivals`. Returns (TTFT, HTTP status)."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    started = time.perf_counter()
    first = 0.0
    async with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return 0.0, response.status_code
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if choices and choices[0].get("text"):
                now = time.perf_counter()
                first = first or now
                arrivals.append(now)
    return first - started, 200


@dataclass(frozen=True)
class Load:
    clients: int
    seconds: float
    model: str
    prompts: PromptMaker
    series: int = 0  # runs on one data directory use distinct series: its KV tiers keep earlier prompts


async def closed_loop(url: str, headers: dict[str, str], load: Load, verify: ssl.SSLContext | bool = True) -> Run:
    """Clients in a closed loop; tokens counted when they arrive inside the steady window."""
    run = Run(window=load.seconds)
    rng = random.Random(load.clients)
    # Prompts of this point only: the server keeps earlier points' prompts cached (slots, host and disk tiers).
    counter = iter(range(load.series * 10**8 + load.clients * 10**6, 10**10))
    arrivals: list[float] = []
    steady_from = time.perf_counter() + STAGGER_S * load.clients
    stop_at = steady_from + load.seconds

    async def client_loop(index: int) -> None:
        await asyncio.sleep(index * STAGGER_S)
        first_request = True
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, verify=verify) as client:
            while time.perf_counter() < stop_at:
                prompt = load.prompts.make(1000 + 211 * next(counter))
                sent = time.perf_counter()
                try:
                    ttft, status = await one_request(client, load.model, prompt, rng.randint(64, 128), arrivals)
                except httpx.HTTPError:
                    run.errors += 1
                    continue
                if status == 503:
                    run.busy += 1
                    await asyncio.sleep(0.5)
                elif status != 200:
                    run.errors += 1
                elif not first_request and steady_from <= sent <= stop_at:
                    run.ttft.append(ttft)
                    run.requests += 1
                first_request = first_request and status != 200

    tasks = [asyncio.ensure_future(client_loop(i)) for i in range(load.clients)]
    _, pending = await asyncio.wait(tasks, timeout=stop_at - time.perf_counter() + 1)
    for task in pending:  # requests still running at the end are abandoned (the server frees them)
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    run.tokens = sum(1 for t in arrivals if steady_from <= t <= stop_at)
    return run


class RssSampler:
    """Peak resident memory of a process and its children, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                procs = [self._process, *self._process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 10, 32])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--context", type=int, default=4096)
    args = parser.parse_args()

    results: dict[tuple[str, int], Run] = {}
    with tempfile.TemporaryDirectory(prefix="moltbot-bench-") as tmp:
        data_dir, model_path, key = prepare_data_dir(tmp, "chat,models:read")
        headers = {"Authorization": f"Bearer {key}"}
        prompts = PromptMaker(model_path, PROMPT_TOKENS)
        env = {"MOLTBOT_THREADS": str(args.threads), "MOLTBOT_CONTEXT_SIZE": str(args.context)}
        with running_server(data_dir, env) as server:
            for clients in args.clients:
                load = Load(clients, args.seconds, BUNDLED_CHAT_MODEL, prompts)
                results["moltbot", clients] = asyncio.run(closed_loop(server.url, headers, load, server.verify))
        peer, url = start_peer(model_path, args.threads, args.context, 512)
        try:
            for clients in args.clients:
                load = Load(clients, args.seconds, "peer", prompts)
                results["peer", clients] = asyncio.run(closed_loop(url, {}, load))
        finally:
            stop(peer)
        minimal_env = {"MOLTBOT_PROFILE": "minimal", "MOLTBOT_THREADS": str(args.threads)}
        with running_server(data_dir, minimal_env) as server, RssSampler(server.process.pid) as rss:
            load = Load(10, args.seconds, BUNDLED_CHAT_MODEL, prompts, series=1)
            minimal = asyncio.run(closed_loop(server.url, headers, load, server.verify))

    print(f"\nconcurrency: closed loop, {args.seconds:.0f} s steady state per point, ~{PROMPT_TOKENS}-token prompts, "
          f"64-128 tokens generated, threads {args.threads}\n")  # fmt: skip
    print("| clients | server | tokens/s | TTFT p50 | TTFT p99 | requests | 503s | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for clients in args.clients:
        for name in ("moltbot", "peer"):
            r = results[name, clients]
            print(f"| {clients} | {name} | {r.tokens / r.window:.1f} | {percentile(r.ttft, 50) * 1000:.0f} ms "
                  f"| {percentile(r.ttft, 99) * 1000:.0f} ms | {r.requests} | {r.busy} | {r.errors} |")  # fmt: skip
    single = results["moltbot", args.clients[0]].tokens / args.seconds or float("nan")
    print("\n| clients | moltbot / peer tokens/s | moltbot / moltbot at 1 client |")
    print("|---|---|---|")
    for clients in args.clients:
        ours, theirs = results["moltbot", clients], results["peer", clients]
        ratio = ours.tokens / theirs.tokens if theirs.tokens else float("nan")
        print(f"| {clients} | {ratio:.2f}x | {ours.tokens / args.seconds / single:.2f}x |")
    print(f"\nminimal profile, 10 clients: {minimal.tokens / minimal.window:.1f} tokens/s, "
          f"TTFT p99 {percentile(minimal.ttft, 99) * 1000:.0f} ms, 503s {minimal.busy}, errors {minimal.errors}, "
          f"peak RSS {rss.peak / 2**20:.0f} MiB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
