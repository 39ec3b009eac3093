"""What the benchmarks share: the bundled model, Moltbot and peer servers, prompts, percentiles."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moltbot.models.store import BUNDLED_CHAT_MODEL, install_bundled
from tests.helpers import create_key, free_port

__all__ = ["BUNDLED_CHAT_MODEL", "PromptMaker", "percentile", "prepare_data_dir", "start_peer", "stop"]


def prepare_data_dir(tmp: str, scopes: str) -> tuple[Path, Path, str]:
    """A data directory with the bundled models and a key: (data dir, the GGUF's path, the key)."""
    data_dir = Path(tmp) / "data"
    install_bundled(data_dir / "models")
    key = create_key(data_dir, scopes, name="bench")
    return data_dir, data_dir / "models" / f"{BUNDLED_CHAT_MODEL}.gguf", key


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
