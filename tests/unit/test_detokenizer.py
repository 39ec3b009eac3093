"""Incremental detokenisation over a byte-level vocabulary, where characters split across tokens."""

from __future__ import annotations

from moltbot.engine.detokenizer import IncrementalDetokenizer


def decode(tokens: list[int]) -> str:
    """Each token is one byte; a SentencePiece-like decoder drops the text's leading space."""
    return bytes(tokens).decode("utf-8", errors="replace").removeprefix(" ")


def feed(text: str, prompt: str = "Say:") -> tuple[list[str], str]:
    detokenizer = IncrementalDetokenizer(decode, list(prompt.encode()))
    pieces = [detokenizer.add(token) for token in text.encode()]
    return pieces, detokenizer.flush()


def test_characters_split_over_tokens_come_out_whole() -> None:
    pieces, tail = feed(" café 🙂!")
    assert "".join(pieces) + tail == " café 🙂!"
    assert all("\ufffd" not in piece for piece in pieces)
    assert pieces[-2:] == ["🙂", "!"]  # the emoji's four bytes wait for each other
    assert pieces[-5:-2] == ["", "", ""]


def test_the_first_token_keeps_its_space() -> None:
    pieces, _ = feed(" Paris")
    assert pieces[0] == " "


def test_an_unfinished_character_is_flushed_at_the_end() -> None:
    detokenizer = IncrementalDetokenizer(decode, [])
    assert detokenizer.add(ord("a")) == "a"
    assert detokenizer.add(0xC3) == ""  # the first byte of "é"; generation ends here
    assert detokenizer.flush() == "\ufffd"
