"""Log-probabilities of the chosen token and the most likely alternatives, from a row's raw logits (the
model's own distribution, before temperature, top-k/p or a grammar), as OpenAI reports them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MAX_TOP = 20


@dataclass(slots=True, frozen=True)
class TopLogprob:
    token: str
    bytes: tuple[int, ...]
    logprob: float


@dataclass(slots=True, frozen=True)
class TokenLogprob:
    """One generated token: its text, bytes, log-probability and the `top` alternatives (most likely first)."""

    token: str
    bytes: tuple[int, ...]
    logprob: float
    top: tuple[TopLogprob, ...] = ()


def token_logprob(logits: npt.NDArray[np.float32], token: int, top: int, piece: Callable[[int], bytes]) -> TokenLogprob:
    """The chosen `token`'s entry and the `top` most likely tokens of a logits row."""
    row = logits.astype(np.float64)
    peak = float(row.max())
    log_total = peak + float(np.log(np.exp(row - peak).sum()))

    def entry(index: int) -> TopLogprob:
        data = piece(index)
        return TopLogprob(data.decode("utf-8", errors="replace"), tuple(data), float(row[index] - log_total))

    best: list[TopLogprob] = []
    if top > 0:
        candidates = np.argpartition(-row, top - 1)[:top]
        best = [entry(int(i)) for i in candidates[np.argsort(-row[candidates], kind="stable")]]
    chosen = entry(token)
    return TokenLogprob(chosen.token, chosen.bytes, chosen.logprob, tuple(best))
