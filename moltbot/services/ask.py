"""Questions over a key's documents: retrieval with the embedding model, related entities from the
knowledge graph, and an answer by the instruct model that cites its excerpts (document, page).

The document job embeds every chunk (`embed`); a question is embedded the same way and the closest
chunks (cosine) are the excerpts. When none is close enough, or the model says the excerpts do not
hold the answer, the answer is "not found in the documents" with no citations: nothing is invented
to fill the gap. The citations are the excerpts the answer cites by number, or when it cites none the
excerpts that hold its numbers and most of its words; `grounded` says whether every number of the
answer is in a cited excerpt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np

from moltbot.engine.types import ChatMessage, Role
from moltbot.errors import InvalidRequestError
from moltbot.services.generation import ChatRequest, GenerationService, Sampling
from moltbot.storage.documents import DocumentRepository
from moltbot.storage.graph import GraphRepository

NOT_FOUND = "not found in the documents"
MIN_SIMILARITY = 0.25  # below this the closest excerpt is not about the question (all-MiniLM-L6-v2)
MAX_QUESTION = 2000
_CITATION = re.compile(r"\[(\d{1,2})\]|\(excerpt (\d{1,2})\)", re.IGNORECASE)
EMBED_BATCH = 64
PROMPT = (
    "{excerpts}\n\n{related}Question: {question}\nWrite the answer as a full sentence taken from the "
    "excerpts, followed by the number of each excerpt it uses in square brackets. If the excerpts do not "
    "say, reply exactly: " + NOT_FOUND + "."
)


@dataclass(slots=True, frozen=True)
class Excerpt:
    document_id: str
    document_name: str
    page: int | None
    chunk: int
    text: str
    score: float


class AskService:
    def __init__(
        self,
        generation: GenerationService,
        documents: DocumentRepository,
        graph: GraphRepository,
        embedding_model: str,
        chat_model: str,
    ) -> None:
        self.generation = generation
        self.documents = documents
        self.graph = graph
        self.embedding_model = embedding_model
        self.chat_model = chat_model

    async def embed(self, texts: Sequence[str]) -> list[bytes]:
        """float32 unit vectors of `texts` (cut to the model's context), as bytes."""
        vectors: list[bytes] = []
        for first in range(0, len(texts), EMBED_BATCH):
            batch = [t or " " for t in texts[first : first + EMBED_BATCH]]
            result = await self.generation.embed(self.embedding_model, batch, truncate=True)
            for vector in result.vectors:
                array = np.asarray(vector, dtype=np.float32)
                norm = float(np.linalg.norm(array)) or 1.0
                vectors.append((array / norm).astype(np.float32).tobytes())
        return vectors

    async def ask(self, owner: str, question: str, document_ids: list[str] | None, top_k: int) -> dict[str, Any]:
        question = " ".join(question.split())
        if not question or len(question) > MAX_QUESTION:
            raise InvalidRequestError(f"question: 1 to {MAX_QUESTION} characters", "question")
        (query,) = await self.embed([question])
        rows = await anyio.to_thread.run_sync(self.documents.searchable, owner, document_ids)
        excerpts = _closest(np.frombuffer(query, dtype=np.float32), rows, top_k)
        body: dict[str, Any] = {"object": "documents.answer", "question": question, "model": self.chat_model}
        if not excerpts or excerpts[0].score < MIN_SIMILARITY:
            return {**body, "answer": NOT_FOUND, "found": False, "citations": [], "related_entities": []}
        related = await anyio.to_thread.run_sync(self._related, owner, question)
        # "Excerpt N (...): text", not "[N] text": a small model shown bracketed labels answers with
        # the labels alone.
        listing = "\n\n".join(
            f"Excerpt {n} ({e.document_name}, page {e.page or '?'}): {' '.join(e.text.split())}"
            for n, e in enumerate(excerpts, start=1)
        )
        related_text = f"Related entities: {'; '.join(related)}\n\n" if related else ""
        request = ChatRequest(
            model=self.chat_model,
            messages=[
                ChatMessage(Role.SYSTEM, "You answer questions about the user's documents, only from excerpts."),
                ChatMessage(Role.USER, PROMPT.format(excerpts=listing, related=related_text, question=question)),
            ],
            sampling=Sampling(max_tokens=300, temperature=0.0),
        )
        answer = (await self.generation.chat(request)).choices[0].text.strip()
        if NOT_FOUND in answer.casefold():
            return {**body, "answer": NOT_FOUND, "found": False, "citations": [], "related_entities": related}
        cited = sorted({int(a or b) for a, b in _CITATION.findall(answer) if 1 <= int(a or b) <= len(excerpts)})
        if not cited:  # the model answered without numbers: cite the excerpts that hold what it says
            cited = [n for n, e in enumerate(excerpts, start=1) if _supports(e.text, answer)]
        citations = [
            {
                "ref": n,
                "document_id": excerpts[n - 1].document_id,
                "document_name": excerpts[n - 1].document_name,
                "page": excerpts[n - 1].page,
                "chunk": excerpts[n - 1].chunk,
                "excerpt": excerpts[n - 1].text,
                "score": round(excerpts[n - 1].score, 4),
            }
            for n in cited
        ]
        cited_text = " ".join(excerpts[n - 1].text for n in cited)
        grounded = bool(cited) and _numbers(_CITATION.sub("", answer)) <= _numbers(cited_text)
        return {
            **body,
            "answer": answer,
            "found": True,
            "grounded": grounded,
            "citations": citations,
            "related_entities": related,
        }

    def _related(self, owner: str, question: str) -> list[str]:
        """Entities the question names, each with its graph neighbours (what the documents relate)."""
        nodes = {n.id: n for n in self.graph.nodes(owner)}
        folded = question.casefold()
        named = [
            n
            for n in nodes.values()
            if n.type != "document" and any(len(x) > 2 and x.casefold() in folded for x in (n.name, *n.aliases))
        ]
        if not named:
            return []
        wanted = {n.id for n in named}
        lines = []
        for edge in self.graph.edges(owner):
            if edge.relation == "mentions":
                continue
            if edge.source in wanted or edge.target in wanted:
                source, target = nodes.get(edge.source), nodes.get(edge.target)
                if source is not None and target is not None:
                    lines.append(f"{source.name} {edge.relation.replace('_', ' ')} {target.name}")
        return sorted(set(lines))[:12]


def _numbers(text: str) -> set[str]:
    return {n.rstrip(".,") for n in re.findall(r"\d+(?:[.,]\d+)*", text)}


def _supports(excerpt: str, answer: str) -> bool:
    """Whether an excerpt holds an answer's numbers and most of its words."""
    words = {w for w in re.findall(r"\w+", answer.casefold()) if len(w) > 3}
    held = set(re.findall(r"\w+", excerpt.casefold()))
    return _numbers(answer) <= _numbers(excerpt) and bool(words) and len(words & held) >= 0.6 * len(words)


def _closest(query: np.ndarray[Any, Any], rows: list[tuple[str, str, Any, bytes]], top_k: int) -> list[Excerpt]:
    if not rows:
        return []
    matrix = np.stack([np.frombuffer(vector, dtype=np.float32) for *_, vector in rows])
    scores = matrix @ query
    best = np.argsort(-scores)[:top_k]
    return [
        Excerpt(rows[i][0], rows[i][1], rows[i][2].page, rows[i][2].index, rows[i][2].text, float(scores[i]))
        for i in best
    ]
