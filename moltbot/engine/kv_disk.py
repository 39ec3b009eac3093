"""Disk tier of the KV cache: sequence states pushed out of host memory, and the slots' states at
shutdown, kept as files in the data directory, least recently used removed past a byte budget.

Each state is two files named by a hash of its tokens: `<name>.meta` (the model it belongs to and the
tokens) and `<name>.kv` (llama.cpp's sequence state). Both are sealed by the caller's Sealer (the
vault's AES-256-GCM, bound to the file name): a file from another model, a torn write, a tampered or
foreign file is ignored and removed, and the turn is simply computed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

from moltbot.engine.scheduler import common_prefix
from moltbot.storage.files import write_atomic

log = logging.getLogger(__name__)


class Sealer(Protocol):
    def seal(self, data: bytes, name: str) -> bytes: ...

    def open(self, blob: bytes, name: str) -> bytes: ...


class DiskKVCache:
    def __init__(self, directory: Path, budget_bytes: int, model_tag: str, sealer: Sealer) -> None:
        self.directory = directory
        self.budget_bytes = budget_bytes
        self._tag = model_tag
        self._sealer = sealer
        self._entries: OrderedDict[str, tuple[tuple[int, ...], int]] = OrderedDict()  # name -> (tokens, bytes)
        self.bytes = 0
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._scan()

    def __len__(self) -> int:
        return len(self._entries)

    def _scan(self) -> None:
        metas = sorted(self.directory.glob("*.meta"), key=lambda p: p.stat().st_mtime)
        for meta in metas:
            name = meta.stem
            data = self.directory / f"{name}.kv"
            try:
                info = json.loads(self._sealer.open(meta.read_bytes(), f"{name}.meta"))
                size = data.stat().st_size
            except Exception:  # noqa: BLE001 - unreadable, torn, tampered or foreign: forget it
                log.warning("KV state %s could not be read and is removed", name)
                self._remove_files(name)
                continue
            if info.get("model") != self._tag:
                self._remove_files(name)  # another model or model version: useless here
                continue
            self._entries[name] = (tuple(info["tokens"]), size)
            self.bytes += size
        for stray in self.directory.glob(".*"):  # temporary files of an interrupted write
            stray.unlink(missing_ok=True)
        self._evict()

    @staticmethod
    def _name(tokens: tuple[int, ...]) -> str:
        return hashlib.sha256(b",".join(str(t).encode() for t in tokens)).hexdigest()[:32]

    def put(self, tokens: tuple[int, ...], data: bytes | bytearray) -> bool:
        """Store a state (entries it extends are dropped); False when it cannot be (too big, disk full)."""
        if not tokens or len(data) > self.budget_bytes:
            return False
        name = self._name(tokens)
        try:
            sealed = self._sealer.seal(bytes(data), f"{name}.kv")
            write_atomic(self.directory / f"{name}.kv", sealed, durable=False)  # a cache: losing it costs a recompute
            meta = json.dumps({"model": self._tag, "tokens": list(tokens)}).encode()
            write_atomic(self.directory / f"{name}.meta", self._sealer.seal(meta, f"{name}.meta"), durable=False)
        except OSError as exc:
            log.warning("KV state not written to disk: %s", exc.strerror)
            self._remove_files(name)
            return False
        for other in [n for n, (t, _) in self._entries.items() if n != name and tokens[: len(t)] == t]:
            self._forget(other)
        if name in self._entries:
            self.bytes -= self._entries.pop(name)[1]
        self._entries[name] = (tokens, len(sealed))
        self.bytes += len(sealed)
        self._evict()
        return True

    def best(self, prompt: tuple[int, ...], limit: int) -> tuple[str | None, int]:
        """The stored state that `prompt` continues for the most tokens (the host tier's rule)."""
        best, best_len = None, 0
        for name, (tokens, _) in self._entries.items():
            shared = min(common_prefix(list(tokens), prompt), limit)
            if shared > best_len and 2 * shared >= len(tokens):
                best, best_len = name, shared
        return best, best_len

    def load(self, name: str) -> bytearray | None:
        """The state's bytes, or None (and the entry removed) when the file cannot be used."""
        try:
            data = self._sealer.open((self.directory / f"{name}.kv").read_bytes(), f"{name}.kv")
        except Exception:  # noqa: BLE001 - a state that does not load is only a cache miss
            log.warning("KV state %s could not be loaded and is removed", name)
            self._forget(name)
            return None
        self._entries.move_to_end(name)
        with contextlib.suppress(OSError):
            os.utime(self.directory / f"{name}.meta")
        return bytearray(data)

    def forget(self, name: str) -> None:
        self._forget(name)

    def _forget(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self.bytes -= entry[1]
        self._remove_files(name)

    def _remove_files(self, name: str) -> None:
        for suffix in (".kv", ".meta"):
            (self.directory / f"{name}{suffix}").unlink(missing_ok=True)

    def _evict(self) -> None:
        while self.bytes > self.budget_bytes and self._entries:
            self._forget(next(iter(self._entries)))
