"""Embeddings from the bundled all-MiniLM-L6-v2 through the real server."""

from __future__ import annotations

import base64

import numpy as np
import openai

from tests.helpers import EMBEDDING_MODEL, Server

SENTENCE = "The cat sits on the mat."


def _cos(a: list[float], b: list[float]) -> float:
    va, vb = np.asarray(a), np.asarray(b)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


def test_listed_in_models(oai: openai.OpenAI) -> None:
    assert EMBEDDING_MODEL in {m.id for m in oai.models.list()}


def test_dimensions_and_similarity(oai: openai.OpenAI) -> None:
    inputs = [SENTENCE, SENTENCE, "A cat is sitting on a rug.", "Quarterly tax filings are due in April."]
    reply = oai.embeddings.create(model=EMBEDDING_MODEL, input=inputs)
    vectors = [d.embedding for d in reply.data]
    assert [d.index for d in reply.data] == [0, 1, 2, 3]
    assert all(len(v) == 384 for v in vectors)
    assert _cos(vectors[0], vectors[1]) > 0.999
    assert _cos(vectors[0], vectors[2]) > 0.5
    assert _cos(vectors[0], vectors[3]) < 0.2
    assert reply.usage.prompt_tokens > 0


def test_matches_the_reference_model(oai: openai.OpenAI) -> None:
    # sentence-transformers/all-MiniLM-L6-v2 on "This is an example sentence" starts with these values.
    reply = oai.embeddings.create(model=EMBEDDING_MODEL, input="This is an example sentence")
    np.testing.assert_allclose(reply.data[0].embedding[:5], [0.0677, 0.0635, 0.0487, 0.0793, 0.0374], atol=5e-4)


def test_base64_equals_float(server: Server) -> None:
    with server.client() as client:
        floats = client.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": SENTENCE}).json()
        packed = client.post(
            "/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": SENTENCE, "encoding_format": "base64"}
        ).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype=np.float32)
    np.testing.assert_allclose(decoded, floats["data"][0]["embedding"], rtol=1e-6)


def test_sdk_default_base64_path(oai: openai.OpenAI) -> None:
    # The openai SDK asks for base64 by default and decodes it itself.
    reply = oai.embeddings.create(model=EMBEDDING_MODEL, input=SENTENCE)
    assert len(reply.data[0].embedding) == 384
