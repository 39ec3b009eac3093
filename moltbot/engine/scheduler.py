"""Pure scheduling policy: which sequences run, on which KV slot, and how many tokens each step.

Every step each running sequence that is decoding contributes its one pending token; sequences still
reading their prompt take chunks from what is left of the step's token budget (chunked prefill);
waiting sequences join between steps when a slot is free (continuous batching). A new sequence takes
the free slot whose cached tokens share the longest prefix with its prompt, so a conversation that
comes back finds its history already computed; with no useful prefix it takes the least recently used
free slot. No llama.cpp here: the runner carries out what this decides.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from moltbot.engine.sequence import Sequence, SequenceStatus

MIN_REUSE = 8  # a shorter shared prefix (a BOS token, say) is not worth taking a slot for
# Exact mode: llama.cpp's CPU matrix products take tiled kernels (tinyBLAS) from 8 rows on and a
# row-by-row dot product, with another summation order, below that; a token read alone or in a piece
# of 2-7 tokens gets other KV bits. Prompt pieces of at least this many tokens give bit-identical KV
# however a prompt is cut (measured: tests/engine/test_batch_numerics.py, bench/decode_rows.py).
EXACT_MIN_PIECE = 8


@dataclass(slots=True)
class Slot:
    index: int
    tokens: list[int] = field(default_factory=list)
    busy: bool = False
    last_used: int = 0


@dataclass(slots=True, frozen=True)
class Work:
    """Evaluate `count` pending tokens of `seq` from position `start`; sample after them if `sample`."""

    seq: Sequence
    start: int
    count: int
    sample: bool


@dataclass(slots=True)
class Plan:
    admitted: list[Sequence] = field(default_factory=list)
    work: list[Work] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(w.count for w in self.work)


def common_prefix(a: list[int], b: tuple[int, ...] | list[int]) -> int:
    size = min(len(a), len(b))
    for i in range(size):
        if a[i] != b[i]:
            return i
    return size


class Scheduler:
    """Admission, slot choice with prefix reuse, and per-step token budgets."""

    def __init__(self, n_slots: int, token_budget: int, *, exact: bool = False) -> None:
        """`exact`: cached prefixes give bit-identical results to computing them again. Only tokens read
        as prompt pieces of at least EXACT_MIN_PIECE tokens are kept for reuse (generated tokens, computed
        one at a time by another kernel, are read again with the next turn), and every prompt evaluates
        at least that many tokens."""
        if n_slots < 1 or token_budget < n_slots:
            raise ValueError("need at least one slot and a token budget of at least one token per slot")
        if exact and token_budget < n_slots + 2 * EXACT_MIN_PIECE:
            raise ValueError(f"exact mode needs a token budget of at least slots + {2 * EXACT_MIN_PIECE}")
        self.exact = exact
        self.min_piece = EXACT_MIN_PIECE if exact else 1
        self.slots = [Slot(i) for i in range(n_slots)]
        self.token_budget = token_budget
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._tick = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def schedule(self) -> Plan:
        plan = Plan()
        budget = self.token_budget
        decoding = [s for s in self.running if s.n_pending == 1 and s.n_cached >= len(s.prompt.tokens)]
        for seq in decoding:
            plan.work.append(Work(seq, seq.n_cached, 1, True))
        budget -= len(decoding)
        for seq in self.running:
            if seq not in decoding and budget > 0:
                budget -= self._prefill(plan, seq, budget)
        for seq in list(self.waiting):
            if budget <= 0:
                break
            if not self._can_start(seq):
                continue
            slot = self._free_slot(seq)
            if slot is None:
                break
            self.waiting.remove(seq)
            self._admit(seq, slot)
            plan.admitted.append(seq)
            budget -= self._prefill(plan, seq, budget)
        return plan

    @staticmethod
    def _can_start(seq: Sequence) -> bool:
        """A copy (n > 1) waits until the sequence it copies has its whole prompt computed."""
        parent = seq.after
        return parent is None or parent.status is not SequenceStatus.RUNNING or parent.prompt_ready

    def _prefill(self, plan: Plan, seq: Sequence, budget: int) -> int:
        count = self._piece(seq.n_pending, budget)
        if count > 0:
            plan.work.append(Work(seq, seq.n_cached, count, count == seq.n_pending))
        return count

    def _piece(self, pending: int, budget: int) -> int:
        """Prompt tokens to read this step: what the budget allows, but (exact mode) never a piece shorter
        than `min_piece`, nor one that leaves fewer than `min_piece` behind (such a rest is taken along,
        past the step's budget but within a batch)."""
        count = min(pending, budget)
        if count == pending or self.min_piece == 1:
            return count
        if pending - count < self.min_piece and pending <= self.token_budget:
            return pending
        count = min(count, pending - self.min_piece)
        return count if count >= self.min_piece else 0

    def _free_slot(self, seq: Sequence) -> Slot | None:
        free = [s for s in self.slots if not s.busy]
        if not free:
            return None
        return max(free, key=lambda s: self._preference(s, seq))

    def _preference(self, slot: Slot, seq: Sequence) -> tuple[int, bool, int]:
        """The slot whose content the prompt mostly continues; else an empty slot; else the least recent."""
        return (self._continued(slot, seq), not slot.tokens, -slot.last_used)

    def _continued(self, slot: Slot, seq: Sequence) -> int:
        """Tokens of the slot the prompt reuses, or 0 when it does not mostly continue that content.

        As llama.cpp's server does (slot prompt similarity 0.5): sharing a template's preamble with
        another conversation is no reason to overwrite that conversation's cache.
        """
        reusable = self._reusable(slot, seq)
        return reusable if reusable >= MIN_REUSE and 2 * reusable >= len(slot.tokens) else 0

    def _reusable(self, slot: Slot, seq: Sequence) -> int:
        return min(common_prefix(slot.tokens, seq.prompt.tokens), self.reuse_limit(seq))

    def reuse_limit(self, seq: Sequence) -> int:
        """The most prompt tokens a cached state may supply: at least one is always evaluated, so the step
        has logits to sample from; in exact mode a whole piece."""
        return max(0, len(seq.prompt.tokens) - self.min_piece)

    def _admit(self, seq: Sequence, slot: Slot) -> None:
        seq.reused = self._continued(slot, seq)
        seq.n_cached = seq.reused
        seq.evicted = tuple(slot.tokens)
        seq.slot = slot.index
        seq.status = SequenceStatus.RUNNING
        slot.busy = True
        slot.tokens = slot.tokens[: seq.reused]
        self.running.append(seq)

    def finish(self, seq: Sequence) -> Slot | None:
        """Take `seq` out; its slot (returned, if it had one) keeps the tokens of its KV cache that may be
        reused: all of them, or in exact mode those read as prompt."""
        slot = None
        if seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        elif seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
            slot = self.slots[seq.slot]
            slot.busy = False
            kept = min(seq.n_cached, len(seq.prompt.tokens)) if self.exact else seq.n_cached
            slot.tokens = seq.tokens[:kept]
            self._tick += 1
            slot.last_used = self._tick
        seq.status = SequenceStatus.FINISHED
        return slot

    def forget(self, slot_index: int) -> None:
        """The slot's KV content is no longer trusted (a failed step): reuse none of it."""
        self.slots[slot_index].tokens = []
