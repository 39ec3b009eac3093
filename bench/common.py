"""What the benchmarks share: the bundled model, Moltbot and peer servers, prompts, percentiles."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moltbot.models.bundled import GEMMA_BASE, MINILM, install_bundled
from moltbot.models.store import ModelStore
from tests.helpers import Server, create_key, free_port

# The engine benches compare Moltbot and a peer on the same GGUF: the small base model.
BUNDLED_CHAT_MODEL = GEMMA_BASE

__all__ = [
    "BUNDLED_CHAT_MODEL",
    "ABResult",
    "Call",
    "PromptMaker",
    "alternate",
    "client_for",
    "percentile",
    "prepare_data_dir",
    "print_ab",
    "start_peer",
    "stop",
    "timed",
]


def prepare_data_dir(tmp: str, scopes: str) -> tuple[Path, Path, str]:
    """A data directory with the bundled models and a key: (data dir, the GGUF's path, the key)."""
    data_dir = Path(tmp) / "data"
    store = ModelStore(data_dir / "models")
    install_bundled(store, frozenset({GEMMA_BASE, MINILM}))
    key = create_key(data_dir, scopes, name="bench")
    return data_dir, store.source(BUNDLED_CHAT_MODEL).path, key


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class PromptMaker:
    """Counting prompts of about `tokens` tokens, cut with the model's own tokenizer; each start differs."""

    def __init__(self, model_path: Path, tokens: int) -> None:
        import llama_cpp

        self._vocab = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
        self._tokens = tokens

    def make(self, start: int) -> str:
        text = ", ".join(str(n) for n in range(start, start + self._tokens))
        tokens = self._vocab.tokenize(text.encode(), add_bos=False)[: self._tokens - 1]
        cut = self._vocab.detokenize(tokens).decode("utf-8", errors="ignore")
        return cut.rsplit(",", 1)[0] + ","

    def count(self, text: str) -> int:
        return len(self._vocab.tokenize(text.encode(), add_bos=True))


def start_peer(model_path: Path, threads: int, context: int, batch: int) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m llama_cpp.server` on the same GGUF, in its best multi-client setting."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model_path), "--model_alias", "peer",
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(context), "--n_threads", str(threads), "--n_threads_batch", str(threads),
        "--n_batch", str(batch), "--n_ubatch", str(batch),
        "--interrupt_requests", "false",
    ]  # fmt: skip
    peer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return peer, url
        except httpx.TransportError:
            time.sleep(0.2)
    peer.kill()
    raise RuntimeError("llama_cpp.server did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


Call = Callable[[httpx.Client], httpx.Response]


def client_for(server: Server, key: str, timeout: float = 120) -> httpx.Client:
    """A client of one of our servers: its key, and its TLS CA trusted."""
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout, verify=server.verify
    )


def timed(client: httpx.Client, count: int, call: Call) -> tuple[list[float], float]:
    """`count` calls one after another: each one's latency, and the seconds they took together."""
    latencies = []
    started = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        response = call(client)
        latencies.append(time.perf_counter() - t0)
        if response.status_code >= 400:
            raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
    return latencies, time.perf_counter() - started


@dataclass
class ABResult:
    latencies: dict[tuple[str, str], list[float]]
    elapsed: dict[tuple[str, str], float]


def alternate(clients: dict[str, httpx.Client], workloads: dict[str, tuple[int, Call]], rounds: int) -> ABResult:
    """Run each workload on each client in rounds whose order flips every round, so drift on a noisy
    machine falls on both sides alike (after a short warm-up on each)."""
    names = list(clients)
    for name in names:
        for count, call in workloads.values():
            timed(clients[name], min(count, 5), call)
    result = ABResult({(w, n): [] for w in workloads for n in names}, {(w, n): 0.0 for w in workloads for n in names})
    for round_index in range(rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for workload, (count, call) in workloads.items():
            for name in order:
                values, seconds = timed(clients[name], count, call)
                result.latencies[workload, name] += values
                result.elapsed[workload, name] += seconds
    return result


def print_ab(result: ABResult, workloads: Iterable[str], base: str, other: str, labels: dict[str, str]) -> None:
    """p50/p99 latency and throughput of each side, and what `other` costs against `base`."""
    print(f"{'workload':<22} {'server':<16} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'cost':>8} {'+p99 ms':>8}")
    for workload in workloads:
        rates = {n: len(result.latencies[workload, n]) / result.elapsed[workload, n] for n in (base, other)}
        p99 = {n: 1000 * percentile(result.latencies[workload, n], 99) for n in (base, other)}
        for name in (base, other):
            values = result.latencies[workload, name]
            cost = "" if name == base else f"{100 * (1 - rates[other] / rates[base]):+.2f}%"
            added = "" if name == base else f"{p99[other] - p99[base]:+.2f}"
            print(
                f"{workload:<22} {labels[name]:<16} {1000 * percentile(values, 50):>8.2f} "
                f"{p99[name]:>8.2f} {rates[name]:>8.1f} {cost:>8} {added:>8}"
            )
