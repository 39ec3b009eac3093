"""The live loop's pieces: clause splitting, the streaming VAD, and held answers (no server)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from moltbot.services.realtime import Outbox, Timing, agreed_words, split_clause
from moltbot.speech.audio import resample
from moltbot.speech.tts import Speakers
from moltbot.speech.vad import StreamingVad


def test_clauses_end_at_punctuation_and_the_first_one_early() -> None:
    assert split_clause("Paris is the capital, and it is") == ("Paris is the capital,", " and it is")
    assert split_clause("Yes, it is") == ("", "Yes, it is")  # too short to say alone
    assert split_clause("The capital of France is", first=True) == ("The capital of France", " is")
    assert split_clause("The capital of France is") == ("", "The capital of France is")
    assert split_clause("The capital of France", first=True) == ("", "The capital of France")  # a word may go on
    assert split_clause("word " * 40)[0].count("word") < 40  # no punctuation at all: cut at a space


def test_the_vad_finds_a_turn_in_a_stream_of_small_chunks() -> None:
    speakers = Speakers(threads=1)
    voice = speakers.resolve(None, "joe")
    spoken = resample(np.concatenate(list(speakers.speak(voice, "Hello there, how are you today?", 1.0))), 22050, 16000)
    stream = np.concatenate([np.zeros(8000, np.float32), spoken, np.zeros(16000, np.float32)])
    vad = StreamingVad(silence_ms=500)
    events = []
    quiet_seen = 0
    for start in range(0, len(stream), 320):  # 20 ms chunks
        events += vad.feed(stream[start : start + 320])
        quiet_seen = max(quiet_seen, vad.quiet_ms)
    assert [e.kind for e in events] == ["speech_started", "speech_stopped"]
    assert 0.3 < events[0].sample / 16000 < 0.7  # the speech began after half a second
    assert abs(events[1].sample / 16000 - (0.5 + len(spoken) / 16000)) < 0.5
    assert quiet_seen >= 400 and vad.quiet_ms == 0  # quiet grew in the pause, and is 0 outside a turn
    silent = StreamingVad()
    assert silent.feed(np.zeros(32000, np.float32)) == []


class FakeSession:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.timing = Timing()

    async def send(self, kind: str, **fields: Any) -> None:
        self.sent.append(kind)


def test_an_answer_made_ahead_is_held_until_released_in_order() -> None:
    async def run() -> FakeSession:
        session = FakeSession()
        outbox = Outbox(session, held=True)  # type: ignore[arg-type]
        await outbox.send("response.created")
        await outbox.send("response.audio.delta", delta="")
        assert session.sent == [] and not outbox.confirmed
        await outbox.release()
        await outbox.send("response.done")
        return session

    session = asyncio.run(run())
    assert session.sent == ["response.created", "response.audio.delta", "response.done"]
    assert session.timing.first_audio > 0  # the audio reached the client at the release


def test_an_answer_finished_ahead_joins_the_conversation_only_when_released() -> None:
    async def run() -> tuple[list[str], list[str]]:
        kept: list[str] = []
        session = FakeSession()
        released, dropped = Outbox(session, held=True), Outbox(session, held=True)  # type: ignore[arg-type]
        released.when_confirmed(lambda: kept.append("released"))
        dropped.when_confirmed(lambda: kept.append("dropped"))
        assert kept == []
        await released.release()
        released.when_confirmed(lambda: kept.append("after"))  # confirmed: runs at once
        return kept, session.sent

    kept, _ = asyncio.run(run())
    assert kept == ["released", "after"]


def test_partial_transcripts_send_only_words_two_hypotheses_agree_on() -> None:
    assert agreed_words([], [], ["what", "is"]) == []  # one hypothesis: nothing is sure yet
    assert agreed_words([], ["what", "is"], ["What", "is", "the", "capital"]) == ["What", "is"]
    said = ["What", "is"]
    assert agreed_words(said, ["What", "is", "the", "capital"], ["What", "is", "the", "capital", "of"]) == [
        "the",
        "capital",
    ]
    # The new hypothesis changes an earlier word: nothing past the change is sent, nothing is taken back.
    assert agreed_words(said, ["What", "is", "the", "capital"], ["Whats", "the", "capital"]) == []
