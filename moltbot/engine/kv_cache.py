"""Host-memory tier of the KV cache: sequence states saved from llama.cpp, kept LRU by a byte budget.

When a slot is handed to another conversation, the state of what it held is copied out
(`llama_state_seq_get_data`); a later request whose prompt starts with those tokens gets it copied back
into its slot (`llama_state_seq_set_data`) and evaluates only the rest.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from moltbot.engine.scheduler import common_prefix


@dataclass(slots=True, frozen=True)
class SavedState:
    tokens: tuple[int, ...]
    data: bytearray

    @property
    def size(self) -> int:
        return len(self.data)


class HostKVCache:
    """Saved sequence states, least recently used evicted first once over `budget_bytes`."""

    def __init__(self, budget_bytes: int, spill: Callable[[SavedState], object] | None = None) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[tuple[int, ...], SavedState] = OrderedDict()
        self.bytes = 0
        self.evictions = 0
        self._spill = spill  # told of each state evicted for room (the disk tier keeps it)

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, tokens: tuple[int, ...], data: bytearray) -> bool:
        """Keep a state; entries whose tokens are a prefix of it are dropped (it covers them)."""
        if not tokens or len(data) > self.budget_bytes:
            return False
        for key in [k for k in self._entries if tokens[: len(k)] == k]:
            self._drop(key)
        self._entries[tokens] = SavedState(tokens, data)
        self.bytes += len(data)
        while self.bytes > self.budget_bytes:
            evicted = self._entries[next(iter(self._entries))]
            self._drop(evicted.tokens)
            self.evictions += 1
            if self._spill is not None:
                self._spill(evicted)
        return True

    def states(self) -> list[SavedState]:
        return list(self._entries.values())

    def best(self, prompt: tuple[int, ...], limit: int) -> tuple[SavedState | None, int]:
        """The saved state that `prompt` continues for the most tokens (at most `limit` of them).

        A state counts only if the prompt shares at least half of it: a template preamble common to
        every conversation is no reason to take another conversation's state.
        """
        best: SavedState | None = None
        best_len = 0
        for state in self._entries.values():
            shared = min(common_prefix(list(state.tokens), prompt), limit)
            if shared > best_len and 2 * shared >= len(state.tokens):
                best, best_len = state, shared
        return best, best_len

    def take(self, state: SavedState) -> None:
        """Remove a state that is being restored into a slot (it lives there now)."""
        self._drop(state.tokens)

    def _drop(self, key: tuple[int, ...]) -> None:
        state = self._entries.pop(key)
        self.bytes -= state.size
