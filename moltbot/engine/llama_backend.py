"""GGUF models on llama.cpp through llama-cpp-python."""

from __future__ import annotations

import codecs
import logging
import secrets
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from moltbot.engine.chat_template import render_transcript
from moltbot.engine.errors import ModelLoadError, UnsupportedOperationError
from moltbot.engine.gguf_check import validate_gguf
from moltbot.engine.sampler import Sampler, SamplerConfig
from moltbot.engine.stops import StopMatcher
from moltbot.engine.types import (
    ChatMessage,
    Chunk,
    Embeddings,
    FinishReason,
    ModelInfo,
    ModelKind,
    Prompt,
    SamplingParams,
)

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class LlamaOptions:
    context_size: int
    batch_size: int
    threads: int
    gpu_layers: int = 0


class LlamaBackend:
    """One llama.cpp context over one GGUF file; used from a single engine thread."""

    def __init__(self, model_id: str, path: Path, options: LlamaOptions) -> None:
        validate_gguf(path)
        try:
            self._llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=options.context_size,
                n_batch=options.batch_size,
                n_ubatch=options.batch_size,
                n_threads=options.threads,
                n_threads_batch=options.threads,
                n_gpu_layers=options.gpu_layers,
                swa_full=True,  # keep every position so a prompt prefix can be reused
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"llama.cpp could not load model {model_id!r}") from exc
        self._vocab = self._llama._model.vocab  # noqa: SLF001 - for end-of-generation tests and grammars
        self.reused_tokens = 0
        self._formatter = self._chat_formatter()
        self._info = ModelInfo(
            id=model_id,
            kind=ModelKind.GENERATE,
            path=str(path),
            created=int(path.stat().st_mtime),
            context_size=self._llama.n_ctx(),
            embedding_dim=self._llama.n_embd(),
            has_chat_template=self._formatter is not None,
            size_bytes=path.stat().st_size,
        )

    def _chat_formatter(self) -> Jinja2ChatFormatter | None:
        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        vocab = self._llama._model  # noqa: SLF001 - token texts for the template
        eos = vocab.token_get_text(self._llama.token_eos())
        bos = vocab.token_get_text(self._llama.token_bos())
        return Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self._llama.tokenize(text.encode("utf-8"), add_bos=add_special, special=add_special)

    def render_chat(self, messages: Sequence[ChatMessage]) -> Prompt:
        if self._formatter is None:
            text, transcript_stops = render_transcript(messages)
            return Prompt(tuple(self.tokenize(text)), transcript_stops, strip_leading_space=True)
        chat: list[Any] = [{"role": m.role.value, "content": m.content} for m in messages]
        rendered = self._formatter(messages=chat)
        stop = rendered.stop
        stops: tuple[str, ...] = tuple(stop) if isinstance(stop, list) else (stop,) if stop else ()
        add_bos = not rendered.added_special
        tokens = self._llama.tokenize(rendered.prompt.encode("utf-8"), add_bos=add_bos, special=True)
        return Prompt(tuple(tokens), stops)

    def stream(self, prompt: Prompt, params: SamplingParams, cancel: threading.Event) -> Iterator[Chunk]:
        sampler = Sampler(self._vocab, self._llama.n_vocab(), _sampler_config(params))
        try:
            self._prefill(list(prompt.tokens))
            yield from self._decode(prompt, params, sampler, cancel)
        finally:
            sampler.close()

    def _prefill(self, tokens: list[int]) -> None:
        """Evaluate the prompt, reusing the longest prefix already in the KV cache."""
        llama = self._llama
        limit = min(llama.n_tokens, len(tokens) - 1)  # re-evaluate at least one token for fresh logits
        cached = np.asarray(llama.input_ids[:limit]) != np.asarray(tokens[:limit], dtype=np.intc)
        mismatch = np.flatnonzero(cached)
        prefix = int(mismatch[0]) if mismatch.size else limit
        if prefix > 0 and not llama._ctx.kv_cache_seq_rm(-1, prefix, -1):  # noqa: SLF001
            prefix = 0
        llama.n_tokens = prefix
        self.reused_tokens = prefix
        llama.eval(tokens[prefix:])

    def _decode(
        self, prompt: Prompt, params: SamplingParams, sampler: Sampler, cancel: threading.Event
    ) -> Iterator[Chunk]:
        llama = self._llama
        matcher = StopMatcher((*params.stop, *prompt.template_stop))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        strip = prompt.strip_leading_space
        reason = FinishReason.LENGTH
        generated = 0
        while generated < params.max_tokens and llama.n_tokens < llama.n_ctx():
            token = sampler.sample(llama._ctx.ctx)  # noqa: SLF001 - the context the sampler reads
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                reason = FinishReason.STOP
                break
            generated += 1
            text = matcher.feed(decoder.decode(llama.detokenize([token])))
            if strip and text:
                text, strip = text.lstrip(" "), False
            if text:
                yield Chunk(text)
            if matcher.stopped:
                reason = FinishReason.STOP
                break
            if cancel.is_set():
                reason = FinishReason.CANCELLED
                break
            if generated < params.max_tokens:
                llama.eval([token])
        tail = "" if matcher.stopped else matcher.feed(decoder.decode(b"", final=True)) + matcher.flush()
        yield Chunk(tail.lstrip(" ") if strip else tail, reason, len(prompt.tokens), generated)

    def embed(self, texts: Sequence[str]) -> Embeddings:
        raise UnsupportedOperationError(f"model {self._info.id!r} does not serve embeddings", param="model")

    def close(self) -> None:
        self._llama.close()


def _sampler_config(params: SamplingParams) -> SamplerConfig:
    return SamplerConfig(
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        min_p=params.min_p,
        seed=params.seed if params.seed is not None else secrets.randbits(31),
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        grammar=params.grammar,
    )
