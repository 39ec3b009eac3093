"""Incremental detokenisation for tokenizers that decode whole token lists (HuggingFace's).

Decoding one token at a time loses what a token means in context: a leading space a SentencePiece
decoder drops at the start of a text, or the bytes of a character split over several tokens. So
each step decodes a short window of tokens twice, without and with the new ones, and emits the
difference once it no longer ends in an unfinished character (as vLLM and TGI do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

_CONTEXT_TOKENS = 6  # prompt tokens the window starts with, so the first answer token keeps its space
_INCOMPLETE = "\ufffd"


class IncrementalDetokenizer:
    """Feed generated tokens; get back the text that is final so far."""

    def __init__(self, decode: Callable[[list[int]], str], prompt: Sequence[int]) -> None:
        self._decode = decode
        self._tokens = list(prompt[-_CONTEXT_TOKENS:])
        self._read = len(self._tokens)  # the window's tokens before this are context, already emitted

    def add(self, token: int) -> str:
        self._tokens.append(token)
        return self._emit(final=False)

    def flush(self) -> str:
        """What is left at the end of generation, unfinished characters included."""
        return self._emit(final=True)

    def _emit(self, *, final: bool) -> str:
        before = self._decode(self._tokens[: self._read])
        after = self._decode(self._tokens)
        if len(after) <= len(before) or (after.endswith(_INCOMPLETE) and not final):
            return ""
        self._tokens = self._tokens[self._read :]  # the emitted tokens become the next window's context
        self._read = len(self._tokens)
        return after[len(before) :]
