"""Summaries: windows of pages, map-reduce over a (fake) generation service, and the grounding checks."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from moltbot.engine.errors import UnsupportedOperationError
from moltbot.services.generation import ChatRequest
from moltbot.services.summaries import Summarizer, map_schema, marked, spans, windows


def test_pages_are_packed_into_windows_and_long_pages_cut() -> None:
    pages = [(1, "a" * 1500), (2, "b" * 1500), (3, "c" * 1500), (4, "d" * 9000), (5, "   ")]
    packed = windows(pages, limit=4000)
    assert [[n for n, _ in w] for w in packed] == [[1, 2], [3], [4], [4], [4]]
    assert sum(len(t) for w in packed for _, t in w) == 4500 + 9000


@dataclass
class FakeInfo:
    chat_template: str = "{{ messages }}"


@dataclass
class FakeWorker:
    info: FakeInfo = field(default_factory=FakeInfo)


@dataclass
class FakeChoice:
    text: str


@dataclass
class FakeGeneration:
    """Answers the map prompts with `maps` in turn, the abstract prompt with `abstract`."""

    maps: list[dict[str, Any]]
    abstract: str
    template: str = "{{ messages }}"
    asked: list[ChatRequest] = field(default_factory=list)

    def generator(self, model: str) -> FakeWorker:
        return FakeWorker(FakeInfo(self.template))

    async def chat(self, request: ChatRequest) -> Any:
        self.asked.append(request)
        assert request.output is not None and request.output.kind == "json_schema"
        if "abstract" in request.output.schema["properties"]:  # type: ignore[index]
            body = {"abstract": self.abstract}
        else:
            body = self.maps[len(self.asked) - 1]

        @dataclass
        class Answer:
            choices: list[FakeChoice]

        return Answer([FakeChoice(json.dumps(body))])


PAGES = [
    (
        1,
        "Deep Retrieval\nAlice Smith, Bob Jones\nStanford University\n\nAbstract. We reach an accuracy of 91.4 percent "
        "on GLUE. It is a good model.",
    ),
    (2, "The model uses 12 layers of attention. Training took 40 epochs on ImageNet."),
]


def test_sentences_are_split_at_stops_short_lines_and_paragraphs_but_not_inside_one() -> None:
    text = (
        "A Title of Some Length\nAlice Smith\n\nAbstract. We study it. Our model reaches\nan accuracy of 88.3 "
        "percent and improves on the best result\n\nby 4.2 points. Fig. 3 shows e.g. more.\n\n\u672c\u6587\u3002"
        "\u5b9e\u9a8c\u3002"
    )
    found = [" ".join(text[a:b].split()) for a, b in spans(text)]
    assert found[:4] == ["A Title of Some Length", "Alice Smith", "Abstract.", "We study it."]
    assert "Our model reaches an accuracy of 88.3 percent and improves on the best result by 4.2 points." in found
    assert found[-2:] == ["\u672c\u6587\u3002", "\u5b9e\u9a8c\u3002"]


def test_only_sentences_that_may_state_results_are_numbered() -> None:
    text, numbered = marked(PAGES, 10)
    assert [(s.id, s.page, s.text) for s in numbered] == [
        (11, 1, "We reach an accuracy of 91.4 percent on GLUE."),
        (12, 2, "The model uses 12 layers of attention."),
        (13, 2, "Training took 40 epochs on ImageNet."),
    ]
    assert "[11] We reach an accuracy" in text and "[page 2]" in text and "[12] The model" in text
    assert "] It is a good model" not in text  # no number, no result word: context only
    schema = map_schema([11, 12, 13], first=False)
    assert schema["properties"]["findings"]["items"]["enum"] == [11, 12, 13] and "title" not in schema["properties"]
    assert "findings" not in map_schema([], first=True)["properties"]  # a window with no candidate


def test_findings_are_the_documents_own_sentences_on_their_pages() -> None:
    maps = [
        {
            "title": "Deep Retrieval",
            "authors": ["Alice Smith", "Bob Jones", "Carol Invented"],
            "affiliations": [{"person": "Alice Smith", "organization": "Stanford University"}],
            "findings": [3, 1, 1, 99],  # 99 is no sentence of the document
            "methods": ["retrieval", "Retrieval ", "GLUE", "a method described in far too many words here"],
            "datasets": ["GLUE", "ImageNet", "retrieval"],  # a topic is not a dataset
            "baselines": ["retrieval", "BM25"],  # the method it applies is not its baseline
        }
    ]
    fake = FakeGeneration(maps, "The paper reaches 91.4 percent. It uses 99 layers. It trains for 40 epochs.")
    summary = asyncio.run(Summarizer(fake, "m").summarize(PAGES))  # type: ignore[arg-type]
    assert summary.title == "Deep Retrieval" and summary.authors == ["Alice Smith", "Bob Jones"]
    assert summary.key_findings == [
        {"text": "We reach an accuracy of 91.4 percent on GLUE.", "pages": [1]},
        {"text": "Training took 40 epochs on ImageNet.", "pages": [2]},
    ]
    assert summary.abstract == "The paper reaches 91.4 percent. It trains for 40 epochs."
    assert summary.dropped_sentences == 1
    assert summary.methods == ["retrieval"] and summary.datasets == ["GLUE", "ImageNet"]
    assert summary.baselines == ["BM25"] and summary.windows == 1
    assert summary.affiliations == [{"person": "Alice Smith", "organization": "Stanford University"}]
    first = fake.asked[0]
    assert "[page 1]" in first.messages[-1].content and first.sampling.temperature == 0.0
    abstract_prompt = fake.asked[-1].messages[-1].content
    assert "The document's abstract: We reach an accuracy" in abstract_prompt  # its own abstract, read too


def test_a_model_without_a_chat_template_is_refused() -> None:
    fake = FakeGeneration([], "", template="")
    with pytest.raises(UnsupportedOperationError, match="no chat template"):
        asyncio.run(Summarizer(fake, "base").summarize(PAGES))  # type: ignore[arg-type]


def test_an_answer_cut_at_the_token_limit_keeps_its_complete_sentences() -> None:
    maps = [{"title": "T", "authors": [], "findings": [1]}]
    fake = FakeGeneration(maps, "")
    cut = '{"abstract": "The paper reaches 91.4 percent. It trains for 40 epochs. It also'

    async def chat(request: ChatRequest) -> Any:
        fake.asked.append(request)
        schema = request.output.schema if request.output is not None else {}
        text = cut if "abstract" in schema["properties"] else json.dumps(maps[0])  # type: ignore[index]

        @dataclass
        class Answer:
            choices: list[FakeChoice]

        return Answer([FakeChoice(text)])

    fake.chat = chat  # type: ignore[method-assign]
    summary = asyncio.run(Summarizer(fake, "m").summarize(PAGES))  # type: ignore[arg-type]
    assert summary.abstract == "The paper reaches 91.4 percent. It trains for 40 epochs."


def test_names_most_windows_agree_on_are_kept() -> None:
    pages = [(n, f"Page {n}. " + "We apply beam search to MIMIC-III and reach 91.4 percent. " * 60) for n in (1, 2, 3)]
    maps = [
        {
            "title": "T",
            "authors": [],
            "methods": ["Beam search on MIMIC-III", "preprocessing"],
            "datasets": ["MIMIC-III"],
        },
        {
            "methods": ["beam search", "Tsinghua University"],
            "datasets": ["MIMIC-III", "retrieval"],
            "baselines": ["BM25"],
        },
        {"methods": ["Beam Search", "preprocessing"], "datasets": ["MIMIC-III"], "baselines": ["BM25", "CRF"]},
    ]
    fake = FakeGeneration(maps, "")
    summary = asyncio.run(Summarizer(fake, "m").summarize(pages))  # type: ignore[arg-type]
    assert summary.windows == 3
    assert summary.methods == ["Beam search", "preprocessing"]  # "on MIMIC-III" cut; two of three windows
    assert summary.datasets == ["MIMIC-III"] and summary.baselines == ["BM25"]  # CRF: one window of three
