"""Helpers for the model repository's tests and benchmark: layer ranges, a "fine-tuned" copy of the
bundled model, and clients that stream chat completions until told to stop."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from moltbot.models.store import ModelStore
from tests.helpers import CHAT_MODEL, Server

MODEL = CHAT_MODEL


def layer_ranges(store: ModelStore, name: str, number: int) -> dict[str, tuple[int, int, str]]:
    """group -> (offset, size, digest) of a GGUF version's layers."""
    manifest = store.manifest(store.version(name, number))
    ranges, offset = {}, 0
    for layer in manifest["layers"]:
        ranges[layer["annotations"]["org.moltbot.group"]] = (offset, int(layer["size"]), layer["digest"])
        offset += int(layer["size"])
    return ranges


def tuned_copy(store: ModelStore, target: Path, groups: tuple[str, ...] = ("block.3",)) -> Path:
    """A copy of the chat model with real weight bytes of the named groups changed: 64 KiB in the
    middle of each replaced by the 64 KiB before it, shifted by a multiple of the Q4_K and Q6_K block
    sizes, so every quantised block stays a valid one (a stand-in for a fine-tune of those blocks)."""
    source = store.source(MODEL).path
    data = bytearray(source.read_bytes())
    ranges = layer_ranges(store, MODEL, int(store.source(MODEL).version))
    shift = 144 * 210
    for group in groups:
        offset, size, _ = ranges[group]
        middle = offset + size // 2
        data[middle : middle + 65536] = data[middle - shift : middle - shift + 65536]
    target.write_bytes(bytes(data))
    return target


@dataclass
class StreamingLoad:
    """Clients streaming chat completions in a loop until told to stop; every failure is kept."""

    server: Server
    stop: threading.Event = field(default_factory=threading.Event)
    done: list[float] = field(default_factory=list)  # when each request finished (monotonic)
    failures: list[str] = field(default_factory=list)

    def run(self) -> None:
        with self.server.client(timeout=120) as client:
            while not self.stop.is_set():
                body = {
                    "model": CHAT_MODEL,
                    "messages": [{"role": "user", "content": "Count to five."}],
                    "max_tokens": 12,
                    "stream": True,
                }
                try:
                    with client.stream("POST", "/v1/chat/completions", json=body) as response:
                        if response.status_code != 200:
                            response.read()
                            self.failures.append(f"{response.status_code}: {response.text[:200]}")
                            continue
                        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
                    if lines[-1:] != ["data: [DONE]"] or any('"error"' in line for line in lines):
                        self.failures.append(f"stream ended badly: {lines[-2:]}")
                        continue
                    self.done.append(time.monotonic())
                except httpx.HTTPError as exc:
                    self.failures.append(f"transport: {exc!r}")
