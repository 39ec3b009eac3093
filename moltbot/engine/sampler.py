"""Token sampling on llama.cpp's sampler chain, with the grammar checked after sampling.

Like llama.cpp's own server (common/sampling.cpp): sample with the plain chain first, test only the
chosen token against the grammar, and apply the grammar to the whole vocabulary only when that token
is rejected. Constraining all 262k Gemma tokens on every step is several times slower.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass

import llama_cpp
import numpy as np
import numpy.typing as npt

from moltbot.engine.errors import InvalidGrammarError

_TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.float32), ("p", np.float32)], align=True)
_PENALTY_WINDOW = 64


@dataclass(slots=True, frozen=True)
class SamplerConfig:
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    seed: int
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    grammar: str | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()


class Sampler:
    """One request's sampling state: the chain, an optional grammar, and a candidates buffer."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p, n_vocab: int, config: SamplerConfig) -> None:
        self._n_vocab = n_vocab
        self._vocab = vocab
        self._chain = self._build_chain(n_vocab, config)
        self._grammar: llama_cpp.llama_sampler_p | None = None
        self._candidates: npt.NDArray[np.void] = np.zeros(0, dtype=_TOKEN_DATA)
        self._ids = np.arange(0, dtype=np.intc)
        self._single: npt.NDArray[np.void] = np.zeros(1, dtype=_TOKEN_DATA)
        if config.grammar:
            self.set_grammar(config.grammar)

    @classmethod
    def check_grammar(cls, vocab: llama_cpp.llama_vocab_p, grammar: str) -> None:
        """Raise InvalidGrammarError unless `grammar` compiles (for one applied later, lazily)."""
        llama_cpp.llama_sampler_free(cls._build_grammar(vocab, grammar))

    @property
    def constrained(self) -> bool:
        return self._grammar is not None

    def set_grammar(self, grammar: str | None) -> None:
        """Constrain what follows by `grammar` (from its start), or lift the constraint (None)."""
        if self._grammar is not None:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None
        if grammar is not None:
            self._grammar = self._build_grammar(self._vocab, grammar)
            if len(self._candidates) != self._n_vocab:  # buffers only for the grammar path
                self._candidates = np.zeros(self._n_vocab, dtype=_TOKEN_DATA)
                self._ids = np.arange(self._n_vocab, dtype=np.intc)

    @staticmethod
    def _build_chain(n_vocab: int, config: SamplerConfig) -> llama_cpp.llama_sampler_p:
        chain: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        stages = []
        if config.logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(config.logit_bias))()
            for i, (token, bias) in enumerate(config.logit_bias):
                biases[i] = llama_cpp.llama_logit_bias(token, bias)
            stages.append(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(config.logit_bias), biases))
        if config.presence_penalty or config.frequency_penalty or config.repeat_penalty != 1.0:
            stages.append(
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab,
                    _PENALTY_WINDOW,
                    config.repeat_penalty,
                    config.frequency_penalty,
                    config.presence_penalty,
                )
            )
        if config.temperature <= 0.0:
            stages.append(llama_cpp.llama_sampler_init_greedy())
        else:
            stages += [
                llama_cpp.llama_sampler_init_top_k(config.top_k),
                llama_cpp.llama_sampler_init_top_p(config.top_p, 1),
                llama_cpp.llama_sampler_init_min_p(config.min_p, 1),
                llama_cpp.llama_sampler_init_temp(config.temperature),
                llama_cpp.llama_sampler_init_dist(config.seed),
            ]
        for stage in stages:
            llama_cpp.llama_sampler_chain_add(chain, stage)
        return chain

    @staticmethod
    def _build_grammar(vocab: llama_cpp.llama_vocab_p, grammar: str) -> llama_cpp.llama_sampler_p:
        sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_grammar(
            vocab, grammar.encode("utf-8"), b"root"
        )
        if not sampler:
            raise InvalidGrammarError("the response format could not be compiled to a grammar", "response_format")
        return sampler

    def _array(self, buffer: npt.NDArray[np.void]) -> llama_cpp.llama_token_data_array:
        data = buffer.ctypes.data_as(llama_cpp.llama_token_data_p)
        return llama_cpp.llama_token_data_array(data=data, size=len(buffer), selected=-1, sorted=False)

    def _fill(self, logits: npt.NDArray[np.float32]) -> llama_cpp.llama_token_data_array:
        self._candidates["id"] = self._ids
        self._candidates["logit"] = logits
        self._candidates["p"] = 0.0
        return self._array(self._candidates)

    def _pick(self, array: llama_cpp.llama_token_data_array) -> int:
        llama_cpp.llama_sampler_apply(self._chain, ctypes.byref(array))
        return int(self._candidates["id"][array.selected])

    def _fits_grammar(self, token: int) -> bool:
        assert self._grammar is not None  # noqa: S101 - only called with a grammar
        self._single[0] = (token, 1.0, 0.0)
        array = self._array(self._single)
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(array))
        return not math.isinf(float(self._single["logit"][0]))

    def sample(self, ctx: llama_cpp.llama_context_p, index: int = -1) -> int:
        """Choose the next token from the logits at `index`, and record it in the sampler state."""
        if self._grammar is None:
            return int(llama_cpp.llama_sampler_sample(self._chain, ctx, index))  # applies and accepts
        pointer = llama_cpp.llama_get_logits_ith(ctx, index)
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        token = self._pick(self._fill(logits))
        if self._grammar is not None and not self._fits_grammar(token):
            array = self._fill(logits)
            llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(array))
            token = self._pick(array)
        self.accept(token)
        return token

    def accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self._chain, token)
        if self._grammar is not None:
            llama_cpp.llama_sampler_accept(self._grammar, token)

    def close(self) -> None:
        llama_cpp.llama_sampler_free(self._chain)
        self.set_grammar(None)
