"""A sentence-transformer (BERT encoder + mean pooling + L2 norm) in NumPy, from safetensors.

Light enough for the default install (no torch): all-MiniLM-L6-v2 embeds a sentence in a few ms.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from moltbot.engine.errors import ContextLengthError, ModelLoadError, RequestCancelledError, UnsupportedOperationError
from moltbot.engine.types import (
    ChatMessage,
    Chunk,
    Embeddings,
    EmbedInput,
    ModelInfo,
    ModelKind,
    Prompt,
    SamplingParams,
)

Array = npt.NDArray[np.float32]


@dataclass(slots=True, frozen=True)
class _Layer:
    qkv_w: Array
    qkv_b: Array
    out_w: Array
    out_b: Array
    ln1_w: Array
    ln1_b: Array
    up_w: Array
    up_b: Array
    down_w: Array
    down_b: Array
    ln2_w: Array
    ln2_b: Array


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    normed: Array = ((x - mean) / np.sqrt(var + eps)) * weight + bias
    return normed


def _erf(x: Array) -> Array:
    # Abramowitz & Stegun 7.1.26 (max error 1.5e-7), vectorised.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    result: Array = (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)
    return result


def _gelu(x: Array) -> Array:
    return (0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0))))).astype(np.float32)


class BertEmbedder:
    """Embeds text with a BERT sentence-transformer directory."""

    def __init__(self, model_id: str, path: Path, max_batch: int = 32) -> None:
        try:
            config = json.loads((path / "config.json").read_text())
            tensors = load_file(str(path / "model.safetensors"))
            self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as exc:  # any parse failure of a user's files is a load error
            raise ModelLoadError(f"cannot load embedding model {model_id!r}: {type(exc).__name__}") from exc
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config.get("layer_norm_eps", 1e-12))
        self._max_len = _max_seq_length(path, int(config.get("max_position_embeddings", 512)))
        self._max_batch = max_batch
        try:
            self._load_weights(tensors, prefix, int(config["num_hidden_layers"]))
        except KeyError as exc:
            raise ModelLoadError(f"embedding model {model_id!r} lacks tensor {exc.args[0]}") from exc
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._cls, self._sep = self._special("[CLS]", model_id), self._special("[SEP]", model_id)
        dim = int(config["hidden_size"])
        self._info = ModelInfo(
            id=model_id,
            kind=ModelKind.EMBED,
            path=str(path),
            created=int(path.stat().st_mtime),
            context_size=self._max_len,
            embedding_dim=dim,
            size_bytes=(path / "model.safetensors").stat().st_size,
            vocab_size=self._tokenizer.get_vocab_size(),
        )

    def _load_weights(self, t: dict[str, npt.NDArray[np.generic]], p: str, n_layers: int) -> None:
        def get(name: str) -> Array:
            return np.ascontiguousarray(t[p + name], dtype=np.float32)

        self._word = get("embeddings.word_embeddings.weight")
        self._pos = get("embeddings.position_embeddings.weight")
        self._type = get("embeddings.token_type_embeddings.weight")
        self._emb_ln = (get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"))
        self._layers = [self._layer(get, f"encoder.layer.{i}.") for i in range(n_layers)]

    @staticmethod
    def _layer(g: Callable[[str], Array], n: str) -> _Layer:
        att = n + "attention."
        qkv_w = np.concatenate([g(att + f"self.{k}.weight") for k in ("query", "key", "value")]).T
        qkv_b = np.concatenate([g(att + f"self.{k}.bias") for k in ("query", "key", "value")])
        return _Layer(
            qkv_w=np.ascontiguousarray(qkv_w),
            qkv_b=qkv_b,
            out_w=np.ascontiguousarray(g(att + "output.dense.weight").T),
            out_b=g(att + "output.dense.bias"),
            ln1_w=g(att + "output.LayerNorm.weight"),
            ln1_b=g(att + "output.LayerNorm.bias"),
            up_w=np.ascontiguousarray(g(n + "intermediate.dense.weight").T),
            up_b=g(n + "intermediate.dense.bias"),
            down_w=np.ascontiguousarray(g(n + "output.dense.weight").T),
            down_b=g(n + "output.dense.bias"),
            ln2_w=g(n + "output.LayerNorm.weight"),
            ln2_b=g(n + "output.LayerNorm.bias"),
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special).ids)

    @property
    def supports_tools(self) -> bool:
        return False

    def render_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, object]] | None = None, *, prefill: str = ""
    ) -> Prompt:
        raise UnsupportedOperationError(f"model {self._info.id!r} is an embedding model", param="model")

    def stream(self, prompt: Prompt, params: SamplingParams, cancel: threading.Event) -> Iterator[Chunk]:
        raise UnsupportedOperationError(f"model {self._info.id!r} is an embedding model", param="model")

    def _special(self, token: str, model_id: str) -> int:
        found = self._tokenizer.token_to_id(token)
        if found is None:
            raise ModelLoadError(f"embedding model {model_id!r} has no {token} token")
        return int(found)

    def fill_in_middle(self, prefix: str, suffix: str) -> list[int]:
        raise UnsupportedOperationError(f"model {self._info.id!r} does not fill in the middle", param="suffix")

    def detokenize(self, tokens: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(tokens), skip_special_tokens=True))

    def _ids(self, item: EmbedInput, index: int, truncate: bool) -> list[int]:
        """An input's token ids with the special tokens the model reads ([CLS] … [SEP]), within the context."""
        # Token ids are framed as the tokenizer frames a text (BERT: [CLS] … [SEP]).
        ids = list(self._tokenizer.encode(item).ids) if isinstance(item, str) else [self._cls, *item, self._sep]
        if len(ids) > self._max_len:
            if not truncate:
                raise ContextLengthError(
                    f"input {index} has {len(ids)} tokens; this model reads at most {self._max_len} "
                    '(send "truncate": true to cut longer inputs)',
                    param="input",
                )
            ids = [*ids[: self._max_len - 1], ids[-1]]  # keep [SEP], as sentence-transformers does
        return ids

    def embed(
        self, inputs: Sequence[EmbedInput], *, truncate: bool = False, cancel: threading.Event | None = None
    ) -> Embeddings:
        encoded = [self._ids(item, index, truncate) for index, item in enumerate(inputs)]
        vectors: list[list[float]] = []
        for start in range(0, len(encoded), self._max_batch):
            if cancel is not None and cancel.is_set():
                raise RequestCancelledError("the client went away")
            vectors.extend(self._encode(encoded[start : start + self._max_batch]).tolist())
        return Embeddings(vectors=vectors, prompt_tokens=sum(len(ids) for ids in encoded))

    def _encode(self, batch: list[list[int]]) -> Array:
        length = max(len(ids) for ids in batch)
        ids = np.zeros((len(batch), length), dtype=np.int64)
        mask = np.zeros((len(batch), length), dtype=np.float32)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        x = self._word[ids] + self._pos[:length][None, :, :] + self._type[0][None, None, :]
        x = _layer_norm(x, *self._emb_ln, self._eps)
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in self._layers:
            x = self._block(x, layer, bias)
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Array = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit

    def _block(self, x: Array, layer: _Layer, bias: Array) -> Array:
        batch, length, hidden = x.shape
        head_dim = hidden // self._heads
        qkv = x @ layer.qkv_w + layer.qkv_b
        qkv = qkv.reshape(batch, length, 3, self._heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q @ k.transpose(0, 1, 3, 2)) / np.float32(np.sqrt(head_dim)) + bias
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
        x = _layer_norm(x + context @ layer.out_w + layer.out_b, layer.ln1_w, layer.ln1_b, self._eps)
        hidden_states = _gelu(x @ layer.up_w + layer.up_b)
        return _layer_norm(x + hidden_states @ layer.down_w + layer.down_b, layer.ln2_w, layer.ln2_b, self._eps)

    def close(self) -> None:
        self._layers = []


def _max_seq_length(path: Path, positions: int) -> int:
    try:
        configured = int(json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError):
        return positions
    return min(configured, positions)
