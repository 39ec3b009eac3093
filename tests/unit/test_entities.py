"""Entity normal forms, resolution across documents, and facts kept only where the document prints them."""

from __future__ import annotations

import pytest

from moltbot.knowledge.entities import (
    KnownEntity,
    Mention,
    Resolver,
    acronym,
    checked_affiliations,
    first_line,
    from_summary,
    front_affiliations,
    ner,
    normal,
    retyped,
    same,
)


@pytest.mark.parametrize(
    ("type_", "a", "b", "expected"),
    [
        ("person", "Alice Smith", "alice  smith.", True),
        ("person", "Smith, Alice", "Alice Smith", True),
        ("person", "A. Smith", "Alice Smith", True),
        ("person", "B. Smith", "Alice Smith", False),
        ("person", "Alice Smith", "Alice Smithson", False),
        ("organization", "The University of Toronto", "Univ. of Toronto", True),
        ("organization", "MIT", "Massachusetts Institute of Technology", True),
        ("organization", "ETH", "Massachusetts Institute of Technology", False),
        ("dataset", "ImageNet", "imagenet", True),
    ],
)
def test_same_entity(type_: str, a: str, b: str, expected: bool) -> None:
    assert same(type_, a, b) is expected


def test_normal_forms_and_acronyms() -> None:
    assert normal("person", "Smith, Alice") == "alice smith"
    assert normal("organization", "The Univ. of Toronto") == "university of toronto"
    assert acronym("Massachusetts Institute of Technology") == "MIT" and acronym("ImageNet") == ""


def test_an_initial_resolves_only_when_one_person_fits() -> None:
    resolver = Resolver([KnownEntity("n1", "person", "Alice Smith", []), KnownEntity("n2", "person", "Bob Jones", [])])
    found = resolver.resolve("person", "A. Smith")
    assert found is not None and found.id == "n1"
    resolver.add(KnownEntity("n3", "person", "Anna Smith", []))
    assert resolver.resolve("person", "A. Smith") is None  # Alice or Anna: not guessed
    found = resolver.resolve("person", "smith, alice")
    assert found is not None and found.id == "n1"
    assert resolver.resolve("organization", "Alice Smith") is None


def test_summary_facts_are_kept_only_where_printed() -> None:
    pages = [(1, "Deep Nets\nAlice Smith (MIT)\n"), (2, "We train on ImageNet with SGD and compare with ResNet.")]
    summary = {
        "authors": ["Alice Smith", "Invented Person"],
        "affiliations": [{"person": "Alice Smith", "organization": "MIT"}, {"person": "Nobody", "organization": "X"}],
        "methods": ["SGD"],
        "datasets": ["ImageNet", "CIFAR-10"],
        "baselines": ["ResNet"],
    }
    mentions, relations = from_summary(summary, pages)
    found = {(r.relation, r.target[1], r.page) for r in relations}
    assert found == {
        ("authored_by", "Alice Smith", 1),
        ("affiliated_with", "MIT", 1),
        ("uses_method", "SGD", 2),
        ("evaluated_on", "ImageNet", 2),
        ("compared_with", "ResNet", 2),
    }
    affiliation = next(r for r in relations if r.relation == "affiliated_with")
    assert affiliation.source == ("person", "Alice Smith")
    assert all(pages[m.page - 1][1][m.start : m.stop] == m.name for m in mentions if m.page and m.start is not None)


def test_ner_finds_people_organisations_and_places_with_spans() -> None:
    pages = [(3, "Alice Smith of Stanford University gave a talk in Boston.")]
    found = {(m.type, m.name, m.page) for m in ner(pages)}
    assert ("person", "Alice Smith", 3) in found and ("place", "Boston", 3) in found
    assert any(t == "organization" and "Stanford University" in n for t, n, _ in found)
    for mention in ner(pages):
        assert pages[0][1][mention.start : mention.stop].strip(" ,.;:()[]\"'") == mention.name


def test_a_name_stops_at_a_line_break_unless_it_wraps() -> None:
    assert first_line("Tsinghua University\n\nAbstract") == "Tsinghua University"
    assert first_line("Massachusetts Institute of\nTechnology") == "Massachusetts Institute of\nTechnology"
    text = "Deep Graphs\nIngrid Halvorsen\nTsinghua University\n\nAbstract. We study graphs."
    names = {(m.type, m.name) for m in ner([(1, text)])}
    assert ("organization", "Tsinghua University") in names
    assert not any("Abstract" in name for _, name in names)


def test_a_single_institute_title_page_affiliates_every_author() -> None:
    pages = [(1, "Deep Graphs\nIngrid Halvorsen, Carlos Diaz\nTsinghua University\n\nAbstract. We cite ETH Zurich.")]
    summary = {"authors": ["Ingrid Halvorsen", "Carlos Diaz"], "affiliations": []}
    mentions = ner(pages)
    relations = front_affiliations(summary, mentions, pages)
    assert {(r.source[1], r.relation, r.target[1]) for r in relations} == {
        ("Ingrid Halvorsen", "affiliated_with", "Tsinghua University"),
        ("Carlos Diaz", "affiliated_with", "Tsinghua University"),
    }  # ETH Zurich, after the abstract heading, is not the authors' institute
    named = {**summary, "affiliations": [{"person": "Carlos Diaz", "organization": "ETH Zurich"}]}
    assert front_affiliations(named, mentions, pages) == []  # the model's own pairs win
    two = [(1, "Ingrid Halvorsen, Carlos Diaz\nTsinghua University\nUniversity of Cambridge\n\nAbstract. Text.")]
    assert front_affiliations(summary, ner(two), two) == []  # which author is where is not known


def test_a_name_the_summary_types_as_a_dataset_is_not_an_organisation() -> None:
    facts = [Mention("dataset", "GLUE", 1, 10, 14)]
    mentions = [Mention("organization", "GLUE", 1, 10, 14), Mention("person", "Ada Lovelace", 1, 0, 12)]
    assert retyped(mentions, facts) == [mentions[1]]
    titled = [Mention("person", "Deep Graphs", 1, 0, 11), mentions[1]]
    assert retyped(titled, facts, title="Deep Graphs for Everyone") == [mentions[1]]


def test_an_affiliation_needs_an_organisation() -> None:
    mentions = [Mention("organization", "ETH Zurich", 1, 0, 10)]
    summary = {
        "affiliations": [
            {"person": "Ada Lovelace", "organization": "Sparse Retrieval for Archives"},  # the title
            {"person": "Ada Lovelace", "organization": "ETH Zurich"},  # tagged on a page
            {"person": "Alan Turing", "organization": "Univ. of Manchester"},  # an organisation word
        ]
    }
    kept = checked_affiliations(summary, mentions)["affiliations"]
    assert [p["organization"] for p in kept] == ["ETH Zurich", "Univ. of Manchester"]
