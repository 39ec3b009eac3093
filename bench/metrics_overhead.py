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
from pathlib import Path

from common import BUNDLED_CHAT_MODEL, Call, alternate, client_for, percentile, prepare_data_dir, print_ab, timed

from tests.helpers import Server, running_server

CHAT = {
    "model": BUNDLED_CHAT_MODEL,
    "messages": [{"role": "user", "content": "Name a colour."}],
    "max_tokens": 8,
    "temperature": 0,
}


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
            clients = {name: client_for(s, prepared[name][2]) for name, s in servers.items()}
            workloads: dict[str, tuple[int, Call]] = {
                "chat (8 tokens)": (args.chat, lambda c: c.post("/v1/chat/completions", json=CHAT)),
                "GET /v1/models": (args.light, lambda c: c.get("/v1/models")),
            }
            result = alternate(clients, workloads, args.rounds)
            scrape, _ = timed(clients["on"], args.scrapes, lambda c: c.get("/metrics"))
            size = len(clients["on"].get("/metrics").content)
            for client in clients.values():
                client.close()

    title = "A/A run, monitoring off on both" if args.aa else f"evaluator every {args.interval} s on 'on'"
    print(f"\nMonitoring overhead: {args.rounds} alternating rounds, {title}")
    labels = {"off": "off (1)", "on": "off (2)"} if args.aa else {"off": "monitoring off", "on": "monitoring on"}
    print_ab(result, workloads, "off", "on", labels)
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
