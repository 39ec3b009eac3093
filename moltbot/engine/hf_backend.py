"""A HuggingFace causal-LM directory (safetensors only) on transformers and torch.

torch and transformers are the optional `hf` extra: they are imported when such a model loads,
never before, and a missing one is a load error that says how to install it. Nothing is fetched:
every load is `local_files_only`, no code from the directory runs (`trust_remote_code=False`), and
a directory holding pickle weights is refused before transformers sees it.

One request at a time (ModelWorker runs it): each request computes its prompt, then decodes token
by token with the model's KV cache; text goes through incremental detokenisation and the same stop
matching as the llama.cpp engine.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from moltbot.engine.chat_template import render_transcript
from moltbot.engine.detokenizer import IncrementalDetokenizer
from moltbot.engine.errors import ContextLengthError, ModelLoadError, UnsupportedOperationError
from moltbot.engine.hf_sampler import TorchSampler
from moltbot.engine.stops import StopMatcher
from moltbot.engine.template import message_dict
from moltbot.engine.types import (
    ChatMessage,
    Chunk,
    Embeddings,
    EmbedInput,
    FinishReason,
    ModelInfo,
    ModelKind,
    Prompt,
    SamplingParams,
)
from moltbot.formats.detect import PICKLE_SUFFIXES, is_causal_lm_dir

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'moltbot[hf]'"


def refuse_pickles(model_id: str, path: Path) -> None:
    """Raise ModelLoadError if the directory holds pickle files: loading one can run arbitrary code."""
    for entry in sorted(path.iterdir()):
        if entry.suffix.lower() in PICKLE_SUFFIXES:
            raise ModelLoadError(
                f"model {model_id!r} holds pickle weights ({entry.name}); only safetensors are loaded: "
                "remove the file, or convert the weights to safetensors"
            )


def import_runtime() -> tuple[Any, Any]:
    """torch and transformers, or a ModelLoadError saying how to install them."""
    try:
        torch = importlib.import_module("torch")
        transformers = importlib.import_module("transformers")
    except ImportError as exc:
        raise ModelLoadError(
            f"HuggingFace models need torch and transformers, which are not installed; install them with: "
            f"{INSTALL_HINT}"
        ) from exc
    return torch, transformers


class HFCausalBackend:
    """A causal LM from a safetensors directory, on the GPU when torch sees one, else on the CPU."""

    def __init__(self, model_id: str, path: Path, context_size: int, threads: int) -> None:
        if not is_causal_lm_dir(path):
            raise ModelLoadError(f"model {model_id!r} is not a causal language model with safetensors weights")
        refuse_pickles(model_id, path)
        self._torch, transformers = import_runtime()
        self._torch.set_num_threads(max(1, threads))
        self._device = self._torch.device("cuda" if self._torch.cuda.is_available() else "cpu")
        self._tokenizer, self._model = self._load(transformers, model_id, path)
        self._end_tokens = self._end_of_generation_tokens()
        # Logits for the last position only: a prompt's full rows would take vocabulary x length floats.
        keeps_last = "logits_to_keep" in inspect.signature(self._model.forward).parameters
        self._forward_options: dict[str, int] = {"logits_to_keep": 1} if keeps_last else {}
        text_config = self._model.config.get_text_config()
        positions = int(getattr(text_config, "max_position_embeddings", 0) or context_size)
        self._info = ModelInfo(
            id=model_id,
            kind=ModelKind.GENERATE,
            path=str(path),
            created=int(path.stat().st_mtime),
            context_size=min(context_size, positions),
            embedding_dim=int(getattr(text_config, "hidden_size", 0) or 0),
            has_chat_template=bool(getattr(self._tokenizer, "chat_template", None)),
            size_bytes=sum(f.stat().st_size for f in path.glob("*.safetensors")),
            vocab_size=int(getattr(text_config, "vocab_size", 0) or len(self._tokenizer)),
        )

    def _load(self, transformers: Any, model_id: str, path: Path) -> tuple[Any, Any]:
        # float32 on the CPU, where half-precision matmuls are slower; the checkpoint's own dtype on a GPU.
        dtype = "auto" if self._device.type == "cuda" else self._torch.float32
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                path, use_safetensors=True, trust_remote_code=False, local_files_only=True, dtype=dtype
            )
        except Exception as exc:  # any failure on a user's files is a load error; the log has the detail
            log.warning("transformers could not load model %s: %s", model_id, exc)
            raise ModelLoadError(f"transformers could not load model {model_id!r}: {type(exc).__name__}") from exc
        return tokenizer, model.to(self._device).eval()

    def _end_of_generation_tokens(self) -> frozenset[int]:
        found: set[int] = set()
        for source in (getattr(self._model, "generation_config", None), self._model.config, self._tokenizer):
            value = getattr(source, "eos_token_id", None)
            found.update([value] if isinstance(value, int) else value or [])
        return frozenset(found)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special))

    @property
    def supports_tools(self) -> bool:
        return "tools" in str(getattr(self._tokenizer, "chat_template", "") or "")

    def render_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None, *, prefill: str = ""
    ) -> Prompt:
        if not self._info.has_chat_template:
            text, transcript_stops = render_transcript(messages)
            return Prompt(tuple(self.tokenize(text + prefill)), transcript_stops, strip_leading_space=True)
        chat = [message_dict(m) for m in messages]
        try:
            text = self._tokenizer.apply_chat_template(
                chat, tools=list(tools) if tools else None, add_generation_prompt=True, tokenize=False
            )
        except Exception as exc:  # the template's own refusal, such as roles out of turn
            raise UnsupportedOperationError(
                f"the chat template of model {self._info.id!r} refused these messages: {exc}", param="messages"
            ) from exc
        return Prompt(tuple(self.tokenize(str(text) + prefill, add_special=False)))  # the template writes BOS

    def stream(self, prompt: Prompt, params: SamplingParams, cancel: threading.Event) -> Iterator[Chunk]:
        self._check(prompt, params)
        sampler = TorchSampler(self._torch, params, self._device)
        matcher = StopMatcher((*params.stop, *prompt.template_stop))
        detokenizer = IncrementalDetokenizer(self._decode, prompt.tokens)
        strip = prompt.strip_leading_space
        room = min(params.max_tokens, self._info.context_size - len(prompt.tokens))
        generated: list[int] = []
        reason = FinishReason.LENGTH
        logits, cache = self._forward(prompt.tokens, None)
        while len(generated) < room:
            if cancel.is_set():
                reason = FinishReason.CANCELLED
                break
            token = sampler.sample(logits, generated)
            if token in self._end_tokens:
                reason = FinishReason.STOP
                break
            generated.append(token)
            text = matcher.feed(detokenizer.add(token))
            if strip and text:
                text, strip = text.lstrip(" "), False
            if text:
                yield Chunk(text)
            if matcher.stopped:
                reason = FinishReason.STOP
                break
            if len(generated) < room:
                logits, cache = self._forward((token,), cache)
        tail = "" if matcher.stopped else matcher.feed(detokenizer.flush()) + matcher.flush()
        stop = matcher.matched if matcher.matched in params.stop else ""
        text = tail.lstrip(" ") if strip else tail
        yield Chunk(text, reason, len(prompt.tokens), len(generated), stop_sequence=stop)

    def _check(self, prompt: Prompt, params: SamplingParams) -> None:
        if params.grammar is not None:
            raise UnsupportedOperationError(
                f"model {self._info.id!r} runs on transformers, which cannot constrain output to a grammar",
                param="response_format",
            )
        if not prompt.tokens:
            raise UnsupportedOperationError("the prompt is empty", param="prompt")
        if len(prompt.tokens) >= self._info.context_size:
            raise ContextLengthError(
                f"the prompt ({len(prompt.tokens)} tokens) does not fit the context ({self._info.context_size})"
            )

    def _forward(self, tokens: Sequence[int], cache: Any) -> tuple[Any, Any]:
        """The logits after the last of `tokens`, and the cache that now holds them all."""
        ids = self._torch.tensor([list(tokens)], device=self._device)
        with self._torch.inference_mode():
            out = self._model(input_ids=ids, cache=cache, use_cache=True, **self._forward_options)
        return out.logits[0, -1], out.cache

    def _decode(self, tokens: list[int]) -> str:
        text = self._tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return str(text)

    def fill_in_middle(self, prefix: str, suffix: str) -> list[int]:
        raise UnsupportedOperationError(f"model {self._info.id!r} does not fill in the middle", param="suffix")

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._decode(list(tokens))

    def embed(
        self, inputs: Sequence[EmbedInput], *, truncate: bool = False, cancel: threading.Event | None = None
    ) -> Embeddings:
        raise UnsupportedOperationError(f"model {self._info.id!r} is a generation model", param="model")

    def close(self) -> None:
        self._model = None
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()
