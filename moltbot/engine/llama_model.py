"""A GGUF model on llama.cpp: loading (after validation), tokenizer, chat template. No context here."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import _internals as internals

from moltbot.engine import llama_log
from moltbot.engine.chat_template import render_transcript
from moltbot.engine.errors import ModelLoadError, UnsupportedOperationError
from moltbot.engine.template import ChatTemplate, TemplateError
from moltbot.engine.types import ChatMessage, Embeddings, EmbedInput, ModelInfo, ModelKind, Prompt
from moltbot.formats import MalformedModelError
from moltbot.formats.gguf import validate_gguf

log = logging.getLogger(__name__)


@functools.cache
def cpu_has_amx() -> bool:
    """Whether the CPU has Intel AMX (read once from /proc/cpuinfo; False where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    found = "amx_int8" in line.split()
                    if found:
                        log.info("the CPU has AMX: llama.cpp's AMX weight buffers are not used (llama.cpp#20824)")
                    return found
    except OSError:
        pass
    return False


class LlamaModelFile:
    """The loaded weights and vocabulary of one GGUF file."""

    def __init__(
        self, model_id: str, path: Path, context_size: int, gpu_layers: int = 0, *, repacked: bool = True
    ) -> None:
        """`repacked`: llama.cpp's repacked weight layouts for the CPU (tiled kernels whose results depend
        on how many rows a step computes); off for exact mode."""
        try:
            validate_gguf(path)
        except MalformedModelError as exc:
            raise ModelLoadError(exc.message) from exc
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0x7FFFFFFF if gpu_layers < 0 else gpu_layers
        if not repacked:
            params.use_extra_bufts = False
        elif cpu_has_amx():
            # llama.cpp's AMX kernels crash on Q4_K_M weights (ggml-org/llama.cpp#20824, open): without
            # the extra buffer types the weights stay in the plain CPU buffer and its AVX-512 kernels.
            params.use_extra_bufts = False
        llama_log.install()
        try:
            self.model = internals.LlamaModel(path_model=str(path), params=params, verbose=True)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"llama.cpp could not load model {model_id!r}") from exc
        self.vocab = self.model.vocab
        self.n_vocab = self.model.n_vocab()
        self._template = self._chat_template(model_id)
        self.info = ModelInfo(
            id=model_id,
            kind=ModelKind.GENERATE,
            path=str(path),
            created=int(path.stat().st_mtime),
            context_size=context_size,
            embedding_dim=self.model.n_embd(),
            has_chat_template=self._template is not None,
            size_bytes=path.stat().st_size,
            vocab_size=self.n_vocab,
            token_level=True,
            parameter_count=int(self.model.n_params()),
            chat_template=self._template_source,
            metadata={k: v for k, v in self.model.metadata().items() if not k.startswith("tokenizer.")},
        )

    def _chat_template(self, model_id: str) -> ChatTemplate | None:
        """The GGUF's chat template; a broken one is reported here and the transcript used instead."""
        source = self.model.metadata().get("tokenizer.chat_template")
        self._template_source = source or ""
        if not source:
            return None
        self._bos_text = self.model.token_get_text(self.model.token_bos())
        eos = self.model.token_get_text(self.model.token_eos())
        try:
            return ChatTemplate(source, bos_token=self._bos_text, eos_token=eos)
        except TemplateError as exc:
            log.error("model %s: %s; chats are rendered as a plain transcript", model_id, exc.message)
            return None

    @property
    def supports_tools(self) -> bool:
        return self._template is not None and self._template.supports_tools

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self._tokenize(text.encode("utf-8"), add_bos=add_special, special=add_special)

    def _tokenize(self, data: bytes, *, add_bos: bool, special: bool) -> list[int]:
        # At most one token per byte, plus BOS/EOS: a buffer that size (llama-cpp-python's own
        # tokenize allocates the whole training context, 32k tokens, on every call).
        capacity = len(data) + 4
        buffer = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(self.vocab, data, len(data), buffer, capacity, add_bos, special)
        if count < 0:
            raise ValueError("text could not be tokenized")
        return list(buffer[:count])

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of token ids (special tokens as their text); invalid UTF-8 replaced."""
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def fill_in_middle(self, prefix: str, suffix: str) -> list[int]:
        """The prompt that asks the model for the text between `prefix` and `suffix` (its FIM tokens)."""
        fim = (llama_cpp.llama_vocab_fim_pre, llama_cpp.llama_vocab_fim_suf, llama_cpp.llama_vocab_fim_mid)
        pre, suf, mid = (int(f(self.vocab)) for f in fim)
        if min(pre, suf, mid) < 0:
            raise UnsupportedOperationError(
                f"model {self.info.id!r} was not trained to fill in the middle (it has no FIM tokens)", param="suffix"
            )
        before = self._tokenize(prefix.encode("utf-8"), add_bos=False, special=False)
        after = self._tokenize(suffix.encode("utf-8"), add_bos=False, special=False)
        return [pre, *before, suf, *after, mid]

    def embed(
        self, inputs: Sequence[EmbedInput], *, truncate: bool = False, cancel: threading.Event | None = None
    ) -> Embeddings:
        raise UnsupportedOperationError(f"model {self.info.id!r} does not serve embeddings", param="model")

    def piece(self, token: int) -> bytes:
        return bytes(self.model.detokenize([token]))

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def render_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None, *, prefill: str = ""
    ) -> Prompt:
        """The prompt for the assistant's next message (continuing `prefill`, text the answer starts with)."""
        if self._template is None:
            text, transcript_stops = render_transcript(messages)
            return Prompt(tuple(self.tokenize(text + prefill)), transcript_stops, strip_leading_space=True)
        text = self._template.render(messages, tools) + prefill
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab)) and not text.startswith(self._bos_text)
        tokens = self._tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        return Prompt(tuple(tokens))

    def close(self) -> None:
        self.model.close()  # type: ignore[no-untyped-call]
