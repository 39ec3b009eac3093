from __future__ import annotations

import pytest

from moltbot.engine.stops import StopMatcher


def feed_all(matcher: StopMatcher, pieces: list[str]) -> str:
    out = "".join(matcher.feed(p) for p in pieces)
    return out + ("" if matcher.stopped else matcher.flush())


def test_no_stops_passes_through() -> None:
    assert feed_all(StopMatcher([]), ["a", "b"]) == "ab"


@pytest.mark.parametrize(
    "pieces",
    [["Paris.\nUser:", " more"], ["Paris.", "\n", "Us", "er", ":", " more"], ["Paris.\nUs", "er: more"]],
)
def test_stop_split_across_pieces(pieces: list[str]) -> None:
    matcher = StopMatcher(["\nUser:"])
    assert feed_all(matcher, pieces) == "Paris."
    assert matcher.stopped


def test_partial_prefix_is_released_when_it_does_not_complete() -> None:
    matcher = StopMatcher(["\nUser:"])
    assert matcher.feed("a\nUs") == "a"
    assert matcher.feed("ual") == "\nUsual"
    assert not matcher.stopped


def test_held_text_is_flushed_at_the_end() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.feed("abcEN") == "abc"
    assert matcher.flush() == "EN"


def test_earliest_stop_wins() -> None:
    matcher = StopMatcher(["world", "lo"])
    assert matcher.feed("hello world") == "hel"


def test_nothing_after_stop() -> None:
    matcher = StopMatcher(["x"])
    matcher.feed("axb")
    assert matcher.feed("more") == ""


def test_the_stop_that_was_hit_is_named() -> None:
    matcher = StopMatcher(["END", "STOP"])
    assert matcher.feed("one ST") == "one "
    assert matcher.matched == ""
    assert matcher.feed("OP two END") == ""
    assert matcher.stopped and matcher.matched == "STOP"
