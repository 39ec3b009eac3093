"""Token sampling over torch logits, in llama.cpp's chain order: penalties, top-k, top-p, min-p,
temperature, then a draw from a seeded generator (or the arg-max when the temperature is 0).

torch is the optional `hf` extra: the caller hands in the module, so nothing here imports it.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Sequence
from typing import Any

from moltbot.engine.types import SamplingParams

PENALTY_WINDOW = 64  # the last generated tokens that presence and frequency penalties look at, as llama.cpp


class TorchSampler:
    """One request's sampling state: its parameters and its random generator."""

    def __init__(self, torch: Any, params: SamplingParams, device: Any) -> None:
        self._torch = torch
        self._params = params
        seed = params.seed if params.seed is not None else secrets.randbits(31)
        self._generator = torch.Generator(device=device).manual_seed(seed)

    def sample(self, logits: Any, generated: Sequence[int]) -> int:
        """The next token from one row of logits, given the tokens generated so far."""
        logits = self._penalise(logits.float(), generated[-PENALTY_WINDOW:])
        if self._params.temperature <= 0.0:
            return int(logits.argmax().item())
        logits = self._truncate(logits)
        probs = self._torch.softmax(logits / self._params.temperature, dim=-1)
        return int(self._torch.multinomial(probs, 1, generator=self._generator).item())

    def _penalise(self, logits: Any, window: Sequence[int]) -> Any:
        presence, frequency = self._params.presence_penalty, self._params.frequency_penalty
        repeat = self._params.repeat_penalty
        if not window or (presence == 0.0 and frequency == 0.0 and repeat == 1.0):
            return logits
        counts = Counter(window)
        ids = self._torch.tensor(list(counts), device=logits.device)
        times = self._torch.tensor(list(counts.values()), dtype=logits.dtype, device=logits.device)
        logits = logits.clone()
        if repeat != 1.0:  # llama.cpp's order: the repeat penalty first, then frequency and presence
            seen = logits[ids]
            logits[ids] = self._torch.where(seen > 0, seen / repeat, seen * repeat)
        logits[ids] -= presence + frequency * times
        return logits

    def _truncate(self, logits: Any) -> Any:
        """Mask (to -inf) the tokens top-k, top-p and min-p leave out; the best token always stays."""
        torch, params = self._torch, self._params
        if 0 < params.top_k < logits.numel():
            kth = torch.topk(logits, params.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            outside = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= params.top_p
            logits = logits.masked_fill(torch.zeros_like(outside).scatter(0, order, outside), float("-inf"))
        if params.min_p > 0.0:
            logits = logits.masked_fill(probs < params.min_p * probs.max(), float("-inf"))
        return logits
