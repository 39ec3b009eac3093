"""Summaries of documents with the instruct model: map over windows of pages, then reduce.

Map: each window (consecutive pages, up to WINDOW_CHARS, every page marked "[page N]") is read by the
model under a JSON schema (a llama.cpp grammar: the answer is always that shape; string lengths are
bounded by max_tokens, not maxLength, whose repetitions llama.cpp's grammar refuses): the title and
authors if the window shows them, up to four key findings each citing its page, methods, datasets.
Reduce: the findings merged in page order (near-repeats dropped), and a one-paragraph abstract written
from them. Grounding is checked, not trusted: a finding whose numbers are not on the page it cites is
re-cited to the window's page that has them, or dropped; an abstract sentence with a number the
document does not hold is dropped. What was dropped is counted in the summary.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from moltbot.engine.errors import UnsupportedOperationError
from moltbot.engine.types import ChatMessage, Role
from moltbot.services.generation import ChatRequest, GenerationService, OutputFormat, Sampling

WINDOW_CHARS = 4000
MAX_WINDOWS = 24
MAX_ABSTRACT_SENTENCES = 5
MAP_CONCURRENCY = 4
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")

_LIST = {"type": "array", "items": {"type": "string"}, "maxItems": 6}
MAP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "authors": {"type": "array", "items": {"type": "string"}, "maxItems": 12},
        "findings": {
            "type": "array",
            "maxItems": 4,
            "items": {
                "type": "object",
                "properties": {"text": {"type": "string"}, "page": {"type": "integer"}},
                "required": ["text", "page"],
            },
        },
        "affiliations": {
            "type": "array",
            "maxItems": 12,
            "items": {
                "type": "object",
                "properties": {"person": {"type": "string"}, "organization": {"type": "string"}},
                "required": ["person", "organization"],
            },
        },
        "methods": _LIST,
        "datasets": _LIST,
        "baselines": _LIST,
    },
    "required": ["title", "authors", "affiliations", "findings", "methods", "datasets", "baselines"],
}
ABSTRACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"abstract": {"type": "string"}},
    "required": ["abstract"],
}
MAP_PROMPT = (
    "Below is part of a document; each page starts with its marker [page N].\n\n{text}\n\n"
    "Extract from this part only, as JSON: `title` (the document's title if this part shows it, else an "
    "empty string), `authors` (names exactly as printed, or none), `findings` (up to 4 key findings or results, "
    "each one short sentence using only facts and numbers from the text, with the `page` it is on), "
    "`methods` and `datasets` (names as printed). Do not invent anything."
)
ABSTRACT_PROMPT = (
    "Title: {title}\n\nKey findings of the document:\n{findings}\n\n"
    "Write a one-paragraph abstract (3 to 5 sentences) of the document from these findings only, as JSON "
    "with the field `abstract`. Use no number that is not in the findings."
)


@dataclass(slots=True)
class Summary:
    title: str = ""
    authors: list[str] = field(default_factory=list)
    abstract: str = ""
    key_findings: list[dict[str, Any]] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    affiliations: list[dict[str, str]] = field(default_factory=list)
    baselines: list[str] = field(default_factory=list)
    model: str = ""
    seconds: float = 0.0
    windows: int = 0
    dropped_findings: int = 0  # findings whose numbers are on none of their window's pages
    dropped_sentences: int = 0  # abstract sentences with a number the document does not hold

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "authors": self.authors,
            "abstract": self.abstract,
            "key_findings": self.key_findings,
            "methods": self.methods,
            "datasets": self.datasets,
            "affiliations": self.affiliations,
            "baselines": self.baselines,
            "model": self.model,
            "seconds": round(self.seconds, 2),
            "windows": self.windows,
            "dropped_findings": self.dropped_findings,
            "dropped_sentences": self.dropped_sentences,
        }


def windows(pages: Sequence[tuple[int, str]], limit: int = WINDOW_CHARS) -> list[list[tuple[int, str]]]:
    """Consecutive pages packed up to `limit` characters; a longer page is cut into pieces."""
    packed: list[list[tuple[int, str]]] = []
    size = 0
    for number, raw in pages:
        text = raw.strip()
        pieces = [text[i : i + limit] for i in range(0, len(text), limit)]
        for piece in pieces:
            if packed and size + len(piece) <= limit:
                packed[-1].append((number, piece))
                size += len(piece)
            else:
                packed.append([(number, piece)])
                size = len(piece)
    return packed


_STRING_FIELD = re.compile(r'"(\w+)"\s*:\s*"((?:[^"\\]|\\.)*)')


def _salvage(text: str) -> dict[str, Any]:
    """The string fields of a JSON object cut off mid-way (the model ran out of tokens)."""
    found: dict[str, Any] = {}
    for match in _STRING_FIELD.finditer(text):
        fragment = match.group(2).rstrip("\\")
        try:
            found[match.group(1)] = json.loads(f'"{fragment}"')
        except ValueError:
            continue
    return found


def numbers(text: str) -> set[str]:
    return {n.rstrip(".,") for n in _NUMBER.findall(text)}


def _unique(values: Sequence[str], limit: int) -> list[str]:
    seen: dict[str, str] = {}
    for value in values:
        clean = " ".join(str(value).split()).strip(" .,;")
        if clean and clean.casefold() not in seen:
            seen[clean.casefold()] = clean
    return list(seen.values())[:limit]


class Summarizer:
    def __init__(self, generation: GenerationService, model: str, max_tokens: int = 400) -> None:
        self.generation = generation
        self.model = model
        self.max_tokens = max_tokens

    async def _ask(self, prompt: str, schema: dict[str, Any]) -> dict[str, Any]:
        request = ChatRequest(
            model=self.model,
            messages=[
                ChatMessage(Role.SYSTEM, "You read documents carefully and answer in JSON. You never invent facts."),
                ChatMessage(Role.USER, prompt),
            ],
            sampling=Sampling(max_tokens=self.max_tokens, temperature=0.0),
            output=OutputFormat("json_schema", schema),
        )
        answer = await self.generation.chat(request)
        text = answer.choices[0].text
        try:
            parsed = json.loads(text)
        except ValueError:
            return _salvage(text)  # cut at max_tokens: keep the complete strings there are
        return parsed if isinstance(parsed, dict) else {}

    async def summarize(self, pages: Sequence[tuple[int, str]]) -> Summary:
        worker = self.generation.generator(self.model)  # raises for a model that is not loaded
        if not worker.info.chat_template:
            raise UnsupportedOperationError(
                f"model {self.model!r} has no chat template: summaries need an instruct model (MOLTBOT_DOCUMENT_MODEL)",
                param="model",
            )
        started = time.perf_counter()
        summary = Summary(model=self.model)
        by_page = dict(pages)
        document_numbers = numbers(" ".join(by_page.values()))
        groups = windows([(n, t) for n, t in pages if t.strip()])[:MAX_WINDOWS]
        summary.windows = len(groups)
        authors: list[str] = []
        methods: list[str] = []
        datasets: list[str] = []
        baselines: list[str] = []
        affiliations: list[dict[str, str]] = []
        findings: list[dict[str, Any]] = []
        texts = ["\n\n".join(f"[page {n}]\n{t}" for n, t in group) for group in groups]
        for group, text, found in zip(groups, texts, await self._read(texts), strict=True):
            if not summary.title and isinstance(found.get("title"), str) and found["title"].strip():
                summary.title = " ".join(found["title"].split())
            authors += [a for a in found.get("authors", []) if isinstance(a, str) and a.strip() in text]
            methods += [m for m in found.get("methods", []) if isinstance(m, str)]
            datasets += [d for d in found.get("datasets", []) if isinstance(d, str)]
            baselines += [b for b in found.get("baselines", []) if isinstance(b, str)]
            for pair in found.get("affiliations", []):
                if isinstance(pair, dict) and all(isinstance(pair.get(k), str) for k in ("person", "organization")):
                    affiliations.append(
                        {"person": pair["person"].strip(), "organization": pair["organization"].strip()}
                    )
            window_pages = [n for n, _ in group]
            for item in found.get("findings", []):
                if not isinstance(item, dict) or not str(item.get("text", "")).strip():
                    continue
                cited = self._cite(str(item["text"]), item.get("page"), window_pages, by_page)
                if cited is None:
                    summary.dropped_findings += 1
                    continue
                findings.append({"text": " ".join(str(item["text"]).split()), "pages": [cited]})
        summary.authors = _unique(authors, 24)
        summary.methods = _unique(methods, 16)
        summary.datasets = _unique(datasets, 16)
        summary.baselines = _unique(baselines, 16)
        summary.affiliations = list({(a["person"], a["organization"]): a for a in affiliations}.values())[:24]
        merged: dict[str, dict[str, Any]] = {}
        for finding in findings:
            key = " ".join(sorted(set(re.findall(r"\w+", finding["text"].casefold()))))
            if key in merged:
                merged[key]["pages"] = sorted(set(merged[key]["pages"]) | set(finding["pages"]))
            else:
                merged[key] = finding
        summary.key_findings = list(merged.values())[:12]
        if summary.key_findings:
            await self._abstract(summary, document_numbers)
        summary.seconds = time.perf_counter() - started
        return summary

    async def _read(self, texts: list[str]) -> list[dict[str, Any]]:
        """The map step over every window at once: the engine batches their decoding (continuous
        batching), which on a CPU gives more tokens per second than one sequence at a time."""
        gate = asyncio.Semaphore(MAP_CONCURRENCY)

        async def read(text: str) -> dict[str, Any]:
            async with gate:
                return await self._ask(MAP_PROMPT.format(text=text), MAP_SCHEMA)

        return list(await asyncio.gather(*(read(text) for text in texts)))

    async def _abstract(self, summary: Summary, document_numbers: set[str]) -> None:
        """The abstract from the merged findings; sentences cut off or holding a number the document
        does not hold are left out."""
        listing = "\n".join(f"- {f['text']}" for f in summary.key_findings)
        answer = await self._ask(
            ABSTRACT_PROMPT.format(title=summary.title or "(untitled)", findings=listing), ABSTRACT_SCHEMA
        )
        kept = []
        sentences = [x for x in _SENTENCE.split(str(answer.get("abstract", "")).strip()) if x]
        if sentences and not sentences[-1].endswith((".", "!", "?")):
            sentences.pop()  # a sentence cut off at the token limit
        for sentence in sentences[:MAX_ABSTRACT_SENTENCES]:
            if numbers(sentence) <= document_numbers:
                kept.append(sentence)
            else:
                summary.dropped_sentences += 1
        summary.abstract = " ".join(kept)

    @staticmethod
    def _cite(text: str, page: object, window_pages: list[int], by_page: dict[int, str]) -> int | None:
        """The page a finding is on: the one it cites if that page holds its numbers, else the window's
        first page that does; None when no page of the window holds them."""
        wanted = numbers(text)
        candidates = ([page] if isinstance(page, int) and page in window_pages else []) + window_pages
        for candidate in candidates:
            if wanted <= numbers(by_page.get(candidate, "")):
                return candidate
        return None
