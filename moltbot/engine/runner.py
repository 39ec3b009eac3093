"""Carries out a Plan on one llama.cpp context: one llama_decode over tokens of many sequences.

Each slot is a llama.cpp sequence id with its own region of the KV cache (`kv_unified = false`,
`n_ctx = slots x context per slot`), and Gemma 3's sliding-window layers keep a full-size cache
(`swa_full`), so a slot's cache can be cut back to any prefix and reused.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import llama_cpp
from llama_cpp import _internals as internals

from moltbot.engine.errors import EngineError, ModelLoadError
from moltbot.engine.llama_model import LlamaModelFile
from moltbot.engine.scheduler import Work
from moltbot.engine.sequence import Sequence


@dataclass(slots=True, frozen=True)
class RunnerOptions:
    slots: int
    context_per_slot: int
    batch_size: int
    threads: int
    host_cache_bytes: int = 0
    exact: bool = False  # cached prefixes bit-identical to recomputed ones (Scheduler's exact mode)


class DecodeError(EngineError):
    """llama_decode failed for a whole step."""


class LlamaRunner:
    """Owns the llama.cpp context and its batch buffer; used from the engine thread only."""

    def __init__(self, model: LlamaModelFile, options: RunnerOptions) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = options.slots * options.context_per_slot
        params.n_batch = options.batch_size
        # Exact mode: a step's prompt piece is never cut into smaller ubatches (another kernel below 8 rows).
        params.n_ubatch = options.batch_size if options.exact else min(options.batch_size, 512)
        params.n_seq_max = options.slots
        params.n_threads = options.threads
        params.n_threads_batch = options.threads
        params.swa_full = True
        params.kv_unified = False
        # Flash attention on the CPU accumulates in lower precision and its results depend on how a
        # batch is split: off, a sequence's logits are bit-identical alone or batched with others.
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        try:
            self._ctx = internals.LlamaContext(model=model.model, params=params, verbose=True)
        except ValueError as exc:
            raise ModelLoadError(f"could not create a context for {model.info.id!r}") from exc
        self._memory = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._batch = llama_cpp.llama_batch_init(options.batch_size, 0, 1)
        self._options = options

    @property
    def ctx(self) -> llama_cpp.llama_context_p:
        ctx: llama_cpp.llama_context_p = self._ctx.ctx
        return ctx

    def truncate(self, slot: int, keep: int) -> bool:
        """Drop the slot's cached positions from `keep` on; False if llama.cpp cannot cut there."""
        return bool(llama_cpp.llama_memory_seq_rm(self._memory, slot, keep, -1))

    def clear(self, slot: int) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, slot, 0, -1)

    def save(self, slot: int) -> bytearray:
        """A copy of the slot's KV state, for the host-memory tier (copied once, straight into it)."""
        size = llama_cpp.llama_state_seq_get_size(self._ctx.ctx, slot)
        data = bytearray(size)
        view = (ctypes.c_uint8 * size).from_buffer(data)
        written = llama_cpp.llama_state_seq_get_data(self._ctx.ctx, view, size, slot)
        del view  # release the export so the bytearray may be resized
        del data[written:]
        return data

    def restore(self, slot: int, data: bytearray) -> bool:
        """Replace the slot's KV content with a saved state; False if llama.cpp refuses it."""
        self.clear(slot)
        view = (ctypes.c_uint8 * len(data)).from_buffer(data)
        if llama_cpp.llama_state_seq_set_data(self._ctx.ctx, view, len(data), slot) == 0:
            self.clear(slot)
            return False
        return True

    def decode(self, work: list[Work]) -> dict[Sequence, int]:
        """Evaluate every work item in one batch; return the batch row of each item that samples."""
        batch = self._batch
        rows: dict[Sequence, int] = {}
        n = 0
        for item in work:
            tokens = item.seq.pending(item.start, item.count)
            for offset, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = item.start + offset
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = item.seq.slot
                batch.logits[n] = item.sample and offset == len(tokens) - 1
                n += 1
            if item.sample:
                rows[item.seq] = n - 1
        batch.n_tokens = n
        status = llama_cpp.llama_decode(self._ctx.ctx, batch)
        if status != 0:
            raise DecodeError(f"llama_decode failed with status {status}")
        return rows

    def close(self) -> None:
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
        self._ctx.close()  # type: ignore[no-untyped-call]
