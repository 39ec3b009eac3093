"""What monitoring costs: the same server with HTTP metrics and the alert evaluator on vs off, same run.

Two Moltbot servers on the same GGUF and data: one with monitoring on (HTTP histograms, the
evaluator sampling every `--interval` seconds, stricter than the 15 s default), one with
MOLTBOT_MONITOR=false. Rounds alternate between them so drift on this noisy machine hits both alike.
Workloads: a small chat request (8 tokens) and GET /v1/models (the gateway alone, where per-request
metrics weigh most). Prints p50/p99 latency and throughput of each, the throughput cost in %, and
the time and size of a /metrics scrape.

    .venv/bin/python bench/metrics_overhead.py [--rounds 10] [--chat 10] [--light 200] [--interval 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from common import BUNDLED_CHAT_MODEL, percentile, prepare_data_dir

from tests.helpers import Server, running_server

CHAT = {
    "model": BUNDLED_CHAT_MODEL,
    "messages": [{"role": "user", "content": "Name a colour."}],
    "max_tokens": 8,
    "temperature": 0,
}


def timed(
    client: httpx.Client, count: int, call: Callable[[httpx.Client], httpx.Response]
) -> tuple[list[float], float]:
    latencies = []
    started = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        response = call(client)
        latencies.append(time.perf_counter() - t0)
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
    return latencies, time.perf_counter() - started


def in_process_costs(data_dir: str, interval: float) -> tuple[float, float, float]:
    """Microseconds of metrics work per request, milliseconds per evaluator tick (with the shipped
    rules over a full window), and milliseconds per /metrics render, measured in this process."""
    from prometheus_client import generate_latest

    from moltbot.models.manager import ModelManager
    from moltbot.monitor.metrics import Metrics
    from moltbot.monitor.rules import load_rules
    from moltbot.monitor.sampler import ResourceSampler
    from moltbot.monitor.service import Monitor

    def no_worker(_: object) -> object:
        raise RuntimeError("no models in this measurement")

    models = ModelManager(no_worker)  # type: ignore[arg-type]
    sampler = ResourceSampler(Path(data_dir))
    metrics = Metrics(models, sampler)
    routes = ["/v1/chat/completions", "/v1/models", "/v1/embeddings", "/v1/models/{model_id}"]
    count = 50_000
    started = time.perf_counter()
    for i in range(count):
        metrics.in_flight += 1
        metrics.observe_http("POST", routes[i % 4], 200, 0.01 * (i % 7), 0.02 * (i % 5))
        metrics.in_flight -= 1
    per_request_us = (time.perf_counter() - started) / count * 1e6
    monitor = Monitor(metrics, sampler, models, load_rules(), notifiers=[], interval_s=interval)
    for _ in range(monitor.window.capacity):  # a full window, as after hours of running
        monitor.tick()
    ticks = 50
    started = time.perf_counter()
    for _ in range(ticks):
        monitor.tick()
    tick_ms = (time.perf_counter() - started) / ticks * 1000
    started = time.perf_counter()
    for _ in range(20):
        generate_latest(metrics.registry)
    render_ms = (time.perf_counter() - started) / 20 * 1000
    return per_request_us, tick_ms, render_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--chat", type=int, default=10, help="chat requests per server per round")
    parser.add_argument("--light", type=int, default=200, help="GET /v1/models per server per round")
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0, help="evaluator interval of the 'on' server")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--aa", action="store_true", help="both servers with monitoring off: the noise floor")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        prepared = {
            name: prepare_data_dir(os.path.join(tmp, name), "chat,models:read,metrics") for name in ("on", "off")
        }
        common = {
            "MOLTBOT_THREADS": str(args.threads),
            "MOLTBOT_PROFILE": "minimal",
            "MOLTBOT_LOG_LEVEL": "warning",
            "MOLTBOT_RATE_LIMIT_RPM": "0",  # thousands of requests a minute from one key, on purpose
        }
        on_env = {**common, "MOLTBOT_MONITOR": "true", "MOLTBOT_MONITOR_INTERVAL_S": str(args.interval)}
        off_env = {**common, "MOLTBOT_MONITOR": "false"}
        if args.aa:
            on_env = off_env
        with (
            running_server(prepared["on"][0], on_env) as on,
            running_server(prepared["off"][0], off_env) as off,
        ):
            servers: dict[str, Server] = {"on": on, "off": off}
            clients = {
                name: httpx.Client(
                    base_url=s.url,
                    headers={"Authorization": f"Bearer {prepared[name][2]}"},
                    timeout=120,
                    verify=s.verify,
                )
                for name, s in servers.items()
            }
            workloads: dict[str, tuple[int, Callable[[httpx.Client], httpx.Response]]] = {
                "chat (8 tokens)": (args.chat, lambda c: c.post("/v1/chat/completions", json=CHAT)),
                "GET /v1/models": (args.light, lambda c: c.get("/v1/models")),
            }
            for name in servers:  # warm-up
                for count, call in workloads.values():
                    timed(clients[name], min(count, 5), call)
            latencies: dict[tuple[str, str], list[float]] = {(w, s): [] for w in workloads for s in servers}
            elapsed = {(w, s): 0.0 for w in workloads for s in servers}
            for round_index in range(args.rounds):
                order = ["on", "off"] if round_index % 2 == 0 else ["off", "on"]
                for workload, (count, call) in workloads.items():
                    for name in order:
                        values, seconds = timed(clients[name], count, call)
                        latencies[workload, name] += values
                        elapsed[workload, name] += seconds
            scrape, _ = timed(clients["on"], args.scrapes, lambda c: c.get("/metrics"))
            size = len(clients["on"].get("/metrics").content)
            for client in clients.values():
                client.close()

    title = "A/A run, monitoring off on both" if args.aa else f"evaluator every {args.interval} s on 'on'"
    print(f"\nMonitoring overhead: {args.rounds} alternating rounds, {title}")
    print(f"{'workload':<18} {'monitor':<8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'cost':>8}")
    for workload in workloads:
        rates = {}
        for name in ("off", "on"):
            values = latencies[workload, name]
            rates[name] = len(values) / elapsed[workload, name]
            cost = "" if name == "off" else f"{100 * (1 - rates['on'] / rates['off']):+.2f}%"
            shown = {"off": "off (1)", "on": "off (2)"}[name] if args.aa else name
            print(
                f"{workload:<18} {shown:<8} {1000 * percentile(values, 50):>8.2f} "
                f"{1000 * percentile(values, 99):>8.2f} {rates[name]:>8.1f} {cost:>8}"
            )
    print(
        f"\n/metrics scrape: p50 {1000 * percentile(scrape, 50):.2f} ms, p99 {1000 * percentile(scrape, 99):.2f} ms, "
        f"{size / 1024:.1f} KiB"
    )
    with tempfile.TemporaryDirectory() as tmp:
        per_request_us, tick_ms, render_ms = in_process_costs(tmp, args.interval)
    print(
        f"in process: metrics work per request {per_request_us:.1f} us; evaluator tick {tick_ms:.2f} ms "
        f"({100 * tick_ms / 1000 / args.interval:.2f}% of one core at a {args.interval} s interval, "
        f"{100 * tick_ms / 1000 / 15:.3f}% at the default 15 s); /metrics render {render_ms:.2f} ms"
    )
    print(f"(cpu: {os.cpu_count()} logical, python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
