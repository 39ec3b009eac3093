"""Preprocessing pipelines: each built-in step, definitions and their errors, plugins by entry point."""

from __future__ import annotations

import itertools
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moltbot.pipelines import (
    BUILTIN_STEPS,
    PRESETS,
    DefinitionError,
    Document,
    PipelineError,
    StepRegistry,
    default_registry,
    parse_definition_text,
)
from moltbot.pipelines.steps import _minilm_tokenizer
from tests.pipeline_plugin import write_step_plugin


def run(steps: list[dict[str, Any]], doc: Document) -> tuple[Document, list[dict[str, Any]]]:
    pipeline = default_registry().build({"steps": steps})
    out, reports = pipeline.run(doc)
    return out, [r.notes for r in reports]


def test_normalize_unicode_repairs_mojibake_ligatures_and_controls() -> None:
    broken = "The \ufb01rst café\u200b costs \u00e2\u201a\u00ac5\x07 and \uff21\uff22\uff23"  # ligature, mojibake €
    doc, _ = run([{"step": "normalize_unicode"}], Document.from_text(broken))
    assert doc.segments[0].text == "The first café costs €5 and ABC"
    doc, _ = run([{"step": "normalize_unicode", "form": "NFC", "fix_encoding": False}], Document.from_text(broken))
    assert "\ufb01" in doc.segments[0].text and "\u201a" in doc.segments[0].text


def test_dehyphenate_joins_words_broken_at_line_ends_only() -> None:
    text = "the experi-\nment and a state-of-the-art\nmodel; Jean-\nPaul stays"
    doc, notes = run([{"step": "dehyphenate"}], Document.from_text(text))
    assert doc.segments[0].text == "the experiment\nand a state-of-the-art\nmodel; Jean-\nPaul stays"
    assert notes == [{"words_joined": 1}]


def paged(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = [
        "model",
        "data",
        "result",
        "method",
        "training",
        "accuracy",
        "baseline",
        "corpus",
        "token",
        "layer",
        "network",
        "error",
    ]
    pages = []
    for number in range(1, n + 1):
        body = "\n".join(" ".join(rng.choice(words) for _ in range(9)).capitalize() + "." for _ in range(6))
        pages.append(f"Journal of Results, Vol. 3 (2024)\nSmith et al.\n\n{body}\n\nPage {number} of {n}\n")
    return pages


def test_headers_footers_and_page_numbers_are_removed_body_kept() -> None:
    pages = paged(6)
    doc, notes = run([{"step": "strip_headers_footers"}], Document.from_pages(pages))
    for segment, original in zip(doc.segments, pages, strict=True):
        assert "Journal of Results" not in segment.text and "Page" not in segment.text
        assert original.split("\n\n")[1] in segment.text  # the body is intact
    assert notes[0]["header_footer_lines_removed"] == 18
    # Two pages are too few to call anything a running head; a lone page number still goes.
    doc, _ = run([{"step": "strip_headers_footers"}], Document.from_pages(["Title\nText.\n- 3 -", "Title\nMore.\n4"]))
    assert [s.text for s in doc.segments] == ["Title\nText.", "Title\nMore."]


def test_repair_whitespace_reflows_paragraphs_keeps_lists_and_cjk() -> None:
    text = "A  line\tthat\nwraps here.  \n\n\n\n- item one\n- item two\n\n机器学习\n很有用。\r\nNext"
    doc, _ = run([{"step": "repair_whitespace"}], Document.from_text(text))
    assert doc.segments[0].text == "A line that wraps here.\n\n- item one\n- item two\n\n机器学习很有用。 Next"
    doc, _ = run([{"step": "repair_whitespace", "reflow": False, "max_blank_lines": 0}], Document.from_text(text))
    assert doc.segments[0].text.startswith("A line that\nwraps here.\n- item one")


def test_detect_language_per_segment_and_for_the_document() -> None:
    pages = [
        "The committee approved the budget for the new research building after a long debate.",
        "Der Ausschuss hat das Budget für das neue Forschungsgebäude nach langer Debatte genehmigt.",
        "委员会经过长时间的辩论后批准了新研究大楼的预算。这是一个重要的决定。",
        "Short.",
    ]
    doc, _ = run([{"step": "detect_language"}], Document.from_pages(pages))
    assert [s.meta.get("language") for s in doc.segments] == ["en", "de", "zh", None]
    assert doc.meta["language"] in {"en", "de"} and set(doc.meta["languages"]) == {"en", "de", "zh"}
    doc, _ = run([{"step": "detect_language", "candidates": ["en", "fr"]}], Document.from_pages(pages[1:2]))
    assert doc.segments[0].meta["language"] in {"en", "fr"}
    with pytest.raises(DefinitionError, match="unknown language codes") as info:
        default_registry().build({"steps": [{"step": "detect_language", "candidates": ["xx"]}]})
    assert info.value.param == "steps[0].candidates"


def test_near_duplicate_paragraphs_are_dropped_across_pages() -> None:
    base = "The proposed method improves accuracy on every benchmark while using half the training data"
    near = base.replace("every", "each")  # one word changed
    other = "An unrelated paragraph about the hardware used in the experiments and its energy budget"
    doc, notes = run(
        [{"step": "remove_near_duplicates", "threshold": 0.6}], Document.from_pages([f"{base}\n\n{other}", near])
    )
    assert doc.segments[0].text == f"{base}\n\n{other}" and doc.segments[1].text == ""
    assert notes == [{"paragraphs_removed": 1}]


def test_redact_pii_by_kind_with_checks_and_counts_only() -> None:
    text = (
        "Mail bob.smith@uni.example.org or call (415) 555-0132. SSN 123-45-6789, resident id "
        "11010519491231002X (bad check digit: 110105194912310021). Card 4111 1111 1111 1111, not 4111 1111 1111 "
        "1112. IBAN GB82 WEST 1234 5698 7654 32. Host 10.0.0.1. In 2024 we saw 1,234,567 cases (doi 10.1145/329)."
    )
    kinds = ["email", "phone", "id", "card", "iban", "ip"]
    doc, notes = run([{"step": "redact_pii", "kinds": kinds}], Document.from_text(text))
    out = doc.segments[0].text
    for secret in (
        "bob.smith",
        "555-0132",
        "123-45-6789",
        "11010519491231002X",
        "4111 1111 1111 1111",
        "GB82",
        "10.0.0.1",
    ):
        assert secret not in out
    assert "110105194912310021" not in out  # an 18-digit run is still an ID-like number
    assert "1112" in out and "2024" in out and "1,234,567" in out and "10.1145/329" in out
    assert notes[0]["redacted"] == {"email": 1, "phone": 1, "id": 3, "card": 1, "iban": 1, "ip": 1}
    doc, _ = run(
        [{"step": "redact_pii", "kinds": ["email"], "replacement": "<{kind}>", "patterns": {"ticket": r"TK-\d+"}}],
        Document.from_text("a@b.co and TK-42, call (415) 555-0132"),
    )
    assert doc.segments[0].text == "<EMAIL> and <TICKET>, call (415) 555-0132"


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"replacement": "{secret}"}, "steps[0].replacement"),
        ({"replacement": "{kind:>999999999}"}, "steps[0].replacement"),
        ({"replacement": "{kind!r}"}, "steps[0].replacement"),
        ({"replacement": "{"}, "steps[0].replacement"),
        ({"region": "XX"}, "steps[0].region"),
        ({"patterns": {"x": "("}}, "steps[0].patterns"),
        ({"patterns": {"x": "a*"}}, "steps[0].patterns"),
        ({"kinds": ["ssn"]}, "steps[0].kinds.0"),
    ],
)
def test_bad_redaction_options_name_the_field(options: dict[str, Any], param: str) -> None:
    with pytest.raises(DefinitionError) as info:
        default_registry().build({"steps": [{"step": "redact_pii", **options}]})
    assert info.value.param == param and info.value.message.startswith("steps[0] (redact_pii): ")


def test_a_runaway_client_pattern_is_stopped_by_its_timeout() -> None:
    pipeline = default_registry().build({"steps": [{"step": "redact_pii", "patterns": {"slow": r"(a|aa)+$"}}]})
    with pytest.raises(PipelineError, match="took over") as info:
        pipeline.run(Document.from_text("a" * 40 + "b"))
    assert info.value.param == "patterns.slow"


def test_chunks_are_bounded_overlap_cover_the_text_and_keep_pages() -> None:
    pages = [" ".join(f"Sentence {p}-{i} says something about topic {i % 7}." for i in range(120)) for p in range(3)]
    doc, notes = run([{"step": "chunk", "max_tokens": 64, "overlap": 16}], Document.from_pages(pages))
    tokenizer = _minilm_tokenizer()
    assert notes[0]["chunks"] == len(doc.chunks) > 3 * 10
    for page_number in (1, 2, 3):
        chunks = [c for c in doc.chunks if c.page == page_number]
        text = doc.segments[page_number - 1].text
        assert chunks[0].start == 0 and chunks[-1].end == len(text.rstrip())
        for before, after in itertools.pairwise(chunks):
            assert after.start < before.end  # they overlap
            assert after.start >= before.start
            assert text[after.start - 1] == " "  # each starts at a word
        for chunk in chunks:
            assert chunk.text == text[chunk.start : chunk.end]
            assert chunk.tokens == len(tokenizer.encode(chunk.text, add_special_tokens=False).ids) <= 64
            assert chunk.text.endswith(".")  # cut at a sentence end
    assert [c.index for c in doc.chunks] == list(range(len(doc.chunks)))


def test_chunks_by_words_and_without_overlap() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    doc, _ = run([{"step": "chunk", "max_tokens": 30, "overlap": 0, "tokenizer": "words"}], Document.from_text(text))
    assert [c.tokens for c in doc.chunks] == [30, 30, 30, 10]
    assert " ".join(c.text for c in doc.chunks) == text


@pytest.mark.parametrize(
    ("definition", "param", "message"),
    [
        ({"steps": [{"step": "chunk", "max_tokens": "x"}]}, "steps[0].max_tokens", "valid integer"),
        ({"steps": [{"step": "chunk", "max_tokens": 4}]}, "steps[0].max_tokens", "greater than or equal to 8"),
        ({"steps": [{"step": "chunk", "overlap": 200}]}, "steps[0].overlap", "at most half"),
        ({"steps": [{"step": "normalize_unicode"}, {"step": "chunk", "colour": 1}]}, "steps[1].colour", "Extra"),
        ({"steps": [{"step": "nope"}]}, "steps[0].step", "unknown step 'nope'"),
        ({"steps": [{"max_tokens": 3}]}, "steps[0].step", "`step` names it"),
        ({"steps": []}, "steps", "1 to 32"),
        ({"steps": [{"step": "chunk"}] * 33}, "steps", "1 to 32"),
        ({"name": "a b", "steps": [{"step": "chunk"}]}, "name", "letters"),
        ({"steps": [{"step": "chunk"}], "stepz": []}, "stepz", "unknown field"),
        ([1, 2], None, "an object"),
    ],
)
def test_bad_definitions_name_the_step_and_field(definition: Any, param: str | None, message: str) -> None:
    with pytest.raises(DefinitionError, match=message) as info:
        default_registry().build(definition)
    assert info.value.param == param and info.value.code == "invalid_pipeline"


def test_yaml_and_json_definitions_and_aliases_refused() -> None:
    yaml_text = "name: papers\nsteps:\n  - step: normalize_unicode\n  - step: chunk\n    max_tokens: 128\n"
    pipeline = default_registry().build(parse_definition_text(yaml_text))
    assert pipeline.name == "papers" and [s.name for s in pipeline.steps] == ["normalize_unicode", "chunk"]
    json_text = '{"steps": [{"step": "chunk", "overlap": 0}]}'
    assert default_registry().build(parse_definition_text(json_text)).steps[0].options.model_dump()["overlap"] == 0
    with pytest.raises(DefinitionError, match="aliases are not allowed"):
        parse_definition_text("a: &x [1, 2]\nb: [*x, *x]\n")
    with pytest.raises(DefinitionError, match="line 3"):
        parse_definition_text("steps:\n  - step: [unclosed\n")
    with pytest.raises(DefinitionError, match="at most 64 KiB"):
        parse_definition_text("#" * (65 * 1024))


def test_every_preset_builds_and_runs() -> None:
    for name, definition in PRESETS.items():
        pipeline = default_registry().build(definition)
        doc, reports = pipeline.run(Document.from_pages(paged(4, seed=len(name))))
        assert [r.step for r in reports] == [s["step"] for s in definition["steps"]]
        assert doc.chars() > 0


@pytest.fixture
def plugin_path(tmp_path: Path) -> Iterator[Path]:
    """A distribution with entry points in `moltbot.pipeline_steps`, importable for this test only."""
    write_step_plugin(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("moltbot_test_steps", None)


def test_plugins_register_through_entry_points(plugin_path: Path) -> None:
    registry = StepRegistry(BUILTIN_STEPS)
    assert "shout" in registry.names()
    source = {info.name: info.source for info in registry.describe()}
    assert source["shout"] == "moltbot-test-steps" and source["chunk"] == "builtin"  # a plugin cannot take a name
    assert set(registry.broken) == {"chunk", "number", "broken"}
    assert "taken by a builtin step" in registry.broken["chunk"]
    assert "not a moltbot.pipelines.Step" in registry.broken["number"]
    assert "failed to load (ModuleNotFoundError" in registry.broken["broken"]
    pipeline = registry.build({"steps": [{"step": "shout", "suffix": "?"}, {"step": "chunk", "tokenizer": "words"}]})
    doc, reports = pipeline.run(Document.from_text("hello there"))
    assert doc.segments[0].text == "HELLO THERE?" and reports[0].notes == {"shouted": 1}
    with pytest.raises(DefinitionError, match=r"unknown step 'broken' \(moltbot-test-steps: it failed to load"):
        registry.build({"steps": [{"step": "broken"}]})
