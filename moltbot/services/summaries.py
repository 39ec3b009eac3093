"""Summaries of documents with the instruct model: map over windows of pages, then reduce.

Map: each window (consecutive pages, up to WINDOW_CHARS, every page marked "[page N]") is read by the
model under a JSON schema (a llama.cpp grammar: the answer is always that shape). The sentences of the
window that may state a result (a number, or a word such as "improves" or "shows") carry a bracket
number, and the model answers with the numbers of the (at most 3) that state the main results, not
with text of its own: a key finding is a sentence of the document, so it is on the page it cites and
holds no number the document does not (a small model asked to write findings copies paragraphs, loops,
or drifts from the page). The grammar allows only the window's numbers. It also names the methods,
datasets and baselines (names as printed: no sentence punctuation), and in the first window the title,
the authors and their affiliations.
Reduce: the findings in page order (repeats dropped), and a one-paragraph abstract written from them
and the document's own abstract when it has one. An abstract sentence with a number the document does
not hold is dropped (and counted), as is a sentence cut off at the token limit.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from moltbot.engine.errors import UnsupportedOperationError
from moltbot.engine.types import ChatMessage, Role
from moltbot.services.generation import ChatRequest, GenerationService, OutputFormat, Sampling

WINDOW_CHARS = 4000
MAX_WINDOWS = 24
FINDINGS_PER_WINDOW = 3
MAX_FINDINGS = 12
ABSTRACT_FINDINGS = 8  # the findings the abstract is written from
OWN_ABSTRACT_CHARS = 1500
MAX_ABSTRACT_SENTENCES = 5
MAP_CONCURRENCY = 4
MAX_NAME_WORDS = 6
_ORGANIZATION = frozenset({"university", "institute", "college", "academy", "laboratory", "school", "department"})
FIRST_MAP_TOKENS = 260  # title, authors, affiliations, then the rest
MAP_TOKENS = 140
ABSTRACT_TOKENS = 220
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# Where a sentence ends: after . ! ? before an upper-case letter or digit, after a CJK full stop, at a
# blank line not followed by a lower-case letter (OCR puts blank lines inside paragraphs too), and
# after a short line followed by a capital (a title, a name, a heading: handled in spans()).
_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|(?<=[\u3002\uff01\uff1f])\s*|\n\s*\n\s*(?![a-z])")
_RESULT_CUE = re.compile(
    r"\d|%|\b(?:improv|outperform|achiev|reach|show|find|found|demonstrat|result|accura|increas|decreas|reduc|"
    r"significan|better|worse|conclu|faster|slower|higher|lower|gain|surpass|exceed)",
    re.IGNORECASE,
)
SHORT_LINE = 40  # a line shorter than this, followed by a line that starts with a capital, ends its sentence
CANDIDATE_CHARS = (30, 600)
_OWN_ABSTRACT = re.compile(r"^\s*abstract\b[.:\s-]*", re.IGNORECASE)

# A name as printed: no sentence punctuation (a dot only inside a number, as in "GPT-3.5").
_NAME: dict[str, Any] = {"type": "string", "pattern": r'^([^.,;:"\\\n\r\t]|[.][0-9])+$'}
_NAMES: dict[str, Any] = {"type": "array", "items": _NAME, "maxItems": 6}
ABSTRACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"abstract": {"type": "string"}},
    "required": ["abstract"],
}
MAP_PROMPT = (
    "Below is part of a document; each page starts with its marker [page N], and the sentences that may "
    "state results carry a number in brackets.\n\n{text}\n\nAnswer in JSON. {front}{findings}"
    "`methods`: the names of the techniques or models it applies; `datasets`: the names of the datasets it "
    "uses; `baselines`: the names of the methods it compares with. Names exactly as printed; nothing that is "
    "not in the text."
)
FRONT_PROMPT = (
    "`title`: the document's title; `authors`: the authors' names; `affiliations`: each author with the "
    "organization printed for them. "
)
FINDINGS_PROMPT = "`findings`: the bracket numbers of the sentences (at most 3) that state the main results. "
ABSTRACT_PROMPT = (
    "Title: {title}\n\n{own}Key results of the document:\n{findings}\n\n"
    "Write a one-paragraph abstract (2 to 4 sentences) of the document from the text above only, as JSON "
    "with the field `abstract`. Use no number that is not above."
)


def map_schema(ids: Sequence[int], first: bool) -> dict[str, Any]:
    """The map answer's shape: findings only among the window's numbered sentences (none: no field)."""
    properties: dict[str, Any] = {}
    if first:
        pair = {
            "type": "object",
            "properties": {"person": _NAME, "organization": _NAME},
            "required": ["person", "organization"],
        }
        properties["title"] = {"type": "string", "pattern": r'^[^"\\\n\r\t]*$'}
        properties["authors"] = {"type": "array", "items": _NAME, "maxItems": 12}
        properties["affiliations"] = {"type": "array", "items": pair, "maxItems": 12}
    if ids:
        properties["findings"] = {
            "type": "array",
            "items": {"type": "integer", "enum": list(ids)},
            "maxItems": FINDINGS_PER_WINDOW,
        }
    properties.update(methods=_NAMES, datasets=_NAMES, baselines=_NAMES)
    return {"type": "object", "properties": properties, "required": list(properties)}


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
    dropped_sentences: int = 0  # abstract sentences with a number the document does not hold
    map_seconds: float = 0.0
    reduce_seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0

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
            "dropped_sentences": self.dropped_sentences,
            "map_seconds": round(self.map_seconds, 2),
            "reduce_seconds": round(self.reduce_seconds, 2),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
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


@dataclass(slots=True, frozen=True)
class Sentence:
    id: int  # its bracket number, unique in the document
    page: int
    text: str  # whitespace joined


def spans(text: str) -> list[tuple[int, int]]:
    """The (start, stop) of each sentence of a page's text, stripped, in order."""
    cuts = {0, len(text)}
    for match in _BOUNDARY.finditer(text):
        cuts.update((match.start(), match.end()))
    offset = 0
    lines = text.split("\n")
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        stripped = line.strip()
        offset += len(line) + 1
        if stripped and len(stripped) < SHORT_LINE and after.strip()[:1].isupper():
            cuts.add(min(offset, len(text)))
    ordered = sorted(cuts)
    found = []
    for start, stop in itertools.pairwise(ordered):
        piece = text[start:stop]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            found.append((start + lead, start + len(piece.rstrip())))
    return found


def candidate(sentence: str) -> bool:
    """Whether a sentence may state a result: long enough, with a number or a result word."""
    return CANDIDATE_CHARS[0] <= len(sentence) <= CANDIDATE_CHARS[1] and bool(_RESULT_CUE.search(sentence))


def marked(group: Sequence[tuple[int, str]], first_id: int) -> tuple[str, list[Sentence]]:
    """A window's text for the model, its candidate sentences numbered from first_id + 1."""
    parts: list[str] = []
    numbered: list[Sentence] = []
    for page, text in group:
        out, at = [f"[page {page}]\n"], 0
        for start, stop in spans(text):
            sentence = " ".join(text[start:stop].split())
            out.append(text[at:start])
            if candidate(sentence):
                numbered.append(Sentence(first_id + len(numbered) + 1, page, sentence))
                out.append(f"[{numbered[-1].id}] ")
            out.append(text[start:stop])
            at = stop
        parts.append("".join(out).strip())
    return "\n\n".join(parts), numbered


def own_abstract(pages: Sequence[tuple[int, str]]) -> str:
    """The document's own abstract: the paragraph of its first two pages that starts with "Abstract"."""
    for _, text in pages[:2]:
        for paragraph in re.split(r"\n\s*\n", text):
            if _OWN_ABSTRACT.match(paragraph):
                return " ".join(_OWN_ABSTRACT.sub("", paragraph, count=1).split())[:OWN_ABSTRACT_CHARS]
    return ""


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


def _proper(name: str) -> bool:
    """A dataset is a proper name: it has a capital letter or a digit ("GLUE", "CIFAR-10", "Cora"),
    unlike the topics a small model lists as datasets ("retrieval", "summarisation")."""
    return any(c.isupper() or c.isdigit() for c in name)


def _short(name: str) -> bool:
    """A method's name is a few words, not a clause ("graph attention networks", not "graph attention
    networks on GLUE with 162 samples")."""
    return 0 < len(name.split()) <= MAX_NAME_WORDS


def _voted(
    answers: Sequence[dict[str, Any]],
    key: str,
    exclude: set[str],
    keep: Callable[[str], bool],
    datasets: Sequence[str] = (),
) -> list[str]:
    """The names of `key` that most windows agree on: named in one window of one or two, in more than
    half of three or more. What a document uses recurs through it; a small model's one-off names are
    mostly noise (topics of its related work, steps such as "preprocessing", people). A name is cut
    before " on <dataset>" ("beam search on MIMIC-III"); names of organisations are left out."""
    votes: dict[str, int] = {}
    first: dict[str, str] = {}
    tail = re.compile(r"\s+(?:on|for|with)\s+(?:" + "|".join(re.escape(d) for d in datasets) + r")$", re.I)
    for found in answers:
        window: dict[str, None] = {}  # ordered: the names come out in the order they are first named
        for name in _strings(found, key):
            clean = " ".join(name.split()).strip(" .,;")
            if datasets:
                clean = tail.sub("", clean)
            folded = clean.casefold()
            if not clean or folded in exclude or not keep(clean) or set(folded.split()) & _ORGANIZATION:
                continue
            window[folded] = None
            first.setdefault(folded, clean)
        for folded in window:
            votes[folded] = votes.get(folded, 0) + 1
    needed = 1 if len(answers) <= 2 else len(answers) // 2 + 1
    return [first[f] for f, count in votes.items() if count >= needed][:16]


def _strings(found: dict[str, Any], key: str) -> list[str]:
    values = found.get(key, [])
    return [v for v in values if isinstance(v, str) and v.strip()] if isinstance(values, list) else []


class Summarizer:
    def __init__(self, generation: GenerationService, model: str) -> None:
        self.generation = generation
        self.model = model

    async def _ask(self, prompt: str, schema: dict[str, Any], max_tokens: int, tally: Summary) -> dict[str, Any]:
        request = ChatRequest(
            model=self.model,
            messages=[
                ChatMessage(Role.SYSTEM, "You read documents carefully and answer in JSON. You never invent facts."),
                ChatMessage(Role.USER, prompt),
            ],
            sampling=Sampling(max_tokens=max_tokens, temperature=0.0),
            output=OutputFormat("json_schema", schema),
        )
        answer = await self.generation.chat(request)
        usage = getattr(answer, "usage", None)
        tally.prompt_tokens += getattr(usage, "prompt_tokens", 0)
        tally.completion_tokens += getattr(usage, "completion_tokens", 0)
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
        document_numbers = numbers(" ".join(text for _, text in pages))
        groups = windows([(n, t) for n, t in pages if t.strip()])[:MAX_WINDOWS]
        summary.windows = len(groups)
        prompts: list[tuple[str, dict[str, Any], int]] = []
        sentences: dict[int, Sentence] = {}
        for index, group in enumerate(groups):
            text, numbered = marked(group, len(sentences))
            sentences.update((s.id, s) for s in numbered)
            first, ids = index == 0, [s.id for s in numbered]
            prompt = MAP_PROMPT.format(
                text=text, front=FRONT_PROMPT if first else "", findings=FINDINGS_PROMPT if ids else ""
            )
            prompts.append((prompt, map_schema(ids, first), FIRST_MAP_TOKENS if first else MAP_TOKENS))
        answers = await self._read(prompts, summary)
        first_text = "\n".join(t for _, t in groups[0]) if groups else ""
        front = answers[0] if answers else {}
        if isinstance(front.get("title"), str):
            summary.title = " ".join(front["title"].split())
        summary.authors = _unique([a for a in _strings(front, "authors") if a.strip() in first_text], 24)
        for pair in front.get("affiliations", []) if isinstance(front.get("affiliations"), list) else []:
            if isinstance(pair, dict) and all(isinstance(pair.get(k), str) for k in ("person", "organization")):
                person, organization = pair["person"].strip(), pair["organization"].strip()
                if person and organization and person != organization:
                    summary.affiliations.append({"person": person, "organization": organization})
        summary.affiliations = list({(a["person"], a["organization"]): a for a in summary.affiliations}.values())
        summary.affiliations = summary.affiliations[:24]
        summary.datasets = _voted(answers, "datasets", set(), _proper)
        named = {d.casefold() for d in summary.datasets} | {a.casefold() for a in summary.authors}
        summary.methods = _voted(answers, "methods", named, _short, summary.datasets)
        named |= {m.casefold() for m in summary.methods}  # what the paper applies is not its baseline
        summary.baselines = _voted(answers, "baselines", named, _short, summary.datasets)
        chosen: dict[str, Sentence] = {}
        for found in answers:
            picked = found.get("findings", [])
            for number in picked[:FINDINGS_PER_WINDOW] if isinstance(picked, list) else []:
                sentence = sentences.get(number) if isinstance(number, int) else None
                if sentence is not None:
                    chosen.setdefault(sentence.text.casefold(), sentence)
        ordered = sorted(chosen.values(), key=lambda s: s.id)[:MAX_FINDINGS]
        summary.key_findings = [{"text": s.text, "pages": [s.page]} for s in ordered]
        if summary.key_findings:
            await self._abstract(summary, own_abstract(pages), document_numbers)
        summary.seconds = time.perf_counter() - started
        return summary

    async def _read(self, prompts: list[tuple[str, dict[str, Any], int]], tally: Summary) -> list[dict[str, Any]]:
        """The map step over every window at once: the engine batches their decoding (continuous
        batching), which on a CPU gives more tokens per second than one sequence at a time."""
        gate = asyncio.Semaphore(MAP_CONCURRENCY)

        async def read(prompt: str, schema: dict[str, Any], max_tokens: int) -> dict[str, Any]:
            async with gate:
                return await self._ask(prompt, schema, max_tokens, tally)

        started = time.perf_counter()
        found = list(await asyncio.gather(*(read(*p) for p in prompts)))
        tally.map_seconds = time.perf_counter() - started
        return found

    async def _abstract(self, summary: Summary, own: str, document_numbers: set[str]) -> None:
        """The abstract from the findings (and the document's own abstract); sentences cut off or
        holding a number the document does not hold are left out."""
        listing = "\n".join(f"- {f['text']}" for f in summary.key_findings[:ABSTRACT_FINDINGS])
        prompt = ABSTRACT_PROMPT.format(
            title=summary.title or "(untitled)",
            own=f"The document's abstract: {own}\n\n" if own else "",
            findings=listing,
        )
        started = time.perf_counter()
        answer = await self._ask(prompt, ABSTRACT_SCHEMA, ABSTRACT_TOKENS, summary)
        summary.reduce_seconds = time.perf_counter() - started
        kept = []
        sentences = [x for x in _SENTENCE.split(str(answer.get("abstract", "")).strip()) if x]
        if sentences and not sentences[-1].endswith((".", "!", "?", "\u3002")):
            sentences.pop()  # a sentence cut off at the token limit
        for sentence in sentences[:MAX_ABSTRACT_SENTENCES]:
            if numbers(sentence) <= document_numbers:
                kept.append(sentence)
            else:
                summary.dropped_sentences += 1
        summary.abstract = " ".join(kept)
