"""Summaries: windows of pages, map-reduce over a (fake) generation service, and the grounding checks."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from moltbot.engine.errors import UnsupportedOperationError
from moltbot.services.generation import ChatRequest
from moltbot.services.summaries import Summarizer, windows


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
    (1, "Deep Retrieval\nAlice Smith, Bob Jones\nWe reach an accuracy of 91.4 percent on GLUE."),
    (2, "The model uses 12 layers. Training took 40 epochs on ImageNet."),
]


def test_findings_are_grounded_in_their_pages_and_merged() -> None:
    maps = [
        {
            "title": "Deep Retrieval",
            "authors": ["Alice Smith", "Bob Jones", "Carol Invented"],
            "findings": [
                {"text": "The accuracy is 91.4 percent on GLUE.", "page": 2},  # wrong page: re-cited to 1
                {"text": "Training took 40 epochs.", "page": 2},
                {"text": "The model has 13 layers.", "page": 2},  # 13 is on no page: dropped
                {"text": "It reaches 91.4 percent accuracy on GLUE.", "page": 1},
            ],
            "methods": ["retrieval", "Retrieval "],
            "datasets": ["GLUE", "ImageNet"],
        }
    ]
    fake = FakeGeneration(maps, "The paper reaches 91.4 percent. It uses 99 layers. It trains for 40 epochs.")
    summary = asyncio.run(Summarizer(fake, "m").summarize(PAGES))  # type: ignore[arg-type]
    assert summary.title == "Deep Retrieval" and summary.authors == ["Alice Smith", "Bob Jones"]
    texts = {f["text"]: f["pages"] for f in summary.key_findings}
    assert texts["The accuracy is 91.4 percent on GLUE."] == [1] and texts["Training took 40 epochs."] == [2]
    assert summary.dropped_findings == 1 and not any("13" in t for t in texts)
    assert summary.abstract == "The paper reaches 91.4 percent. It trains for 40 epochs."
    assert summary.dropped_sentences == 1
    assert summary.methods == ["retrieval"] and summary.windows == 1
    assert "[page 1]" in fake.asked[0].messages[-1].content and fake.asked[0].sampling.temperature == 0.0


def test_a_model_without_a_chat_template_is_refused() -> None:
    fake = FakeGeneration([], "", template="")
    with pytest.raises(UnsupportedOperationError, match="no chat template"):
        asyncio.run(Summarizer(fake, "base").summarize(PAGES))  # type: ignore[arg-type]


def test_an_answer_cut_at_the_token_limit_keeps_its_complete_sentences() -> None:
    maps = [{"title": "T", "authors": [], "findings": [{"text": "Recall is 91.4 percent.", "page": 1}]}]
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
