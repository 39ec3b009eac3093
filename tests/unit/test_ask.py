"""Questions over documents: nearest excerpts by cosine, and what counts as an excerpt supporting an answer."""

from __future__ import annotations

import numpy as np

from moltbot.services.ask import _closest, _supports
from moltbot.storage.documents import ChunkRow


def unit(*values: float) -> bytes:
    vector = np.asarray(values, dtype=np.float32)
    return (vector / np.linalg.norm(vector)).astype(np.float32).tobytes()


def test_the_closest_chunks_come_first_with_their_scores() -> None:
    rows = [
        ("doc_a", "a.pdf", ChunkRow(0, 1, 0, 10, 3, "north"), unit(1, 0, 0)),
        ("doc_b", "b.pdf", ChunkRow(4, 7, 0, 10, 3, "east"), unit(0, 1, 0)),
        ("doc_b", "b.pdf", ChunkRow(5, 8, 0, 10, 3, "north-east"), unit(1, 1, 0)),
    ]
    found = _closest(np.frombuffer(unit(1, 0.2, 0), dtype=np.float32), rows, top_k=2)
    assert [(e.document_id, e.chunk, e.page) for e in found] == [("doc_a", 0, 1), ("doc_b", 5, 8)]
    assert 1.0 >= found[0].score > found[1].score > 0.5
    assert _closest(np.frombuffer(unit(1, 0, 0), dtype=np.float32), [], top_k=3) == []


def test_an_excerpt_supports_an_answer_with_its_numbers_and_words() -> None:
    excerpt = "On Tavolara the team counted 312 puffins and 45 gannets during the spring survey."
    assert _supports(excerpt, "312 puffins were counted on Tavolara.")
    assert not _supports(excerpt, "313 puffins were counted on Tavolara.")  # a number it does not hold
    assert not _supports(excerpt, "The committee approved the budget.")
