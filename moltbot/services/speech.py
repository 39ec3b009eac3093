"""Speech: transcriptions (speech to text) and speech (text to speech) for the OpenAI-style audio routes.

The engines (moltbot/speech) are blocking C++/ONNX code: every call runs in a worker thread, bounded by
a capacity limiter, so the event loop keeps serving while a file is decoded or a sentence is spoken.
Streaming hands each segment or sentence on as the engine makes it. No HTTP here: errors are
SpeechError (a 400 with the field it concerns).
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio
import numpy as np

from moltbot.speech.audio import FORMATS, Audio, AudioError, decode, encode
from moltbot.speech.stt import Engine, Segment, SpeechModelError, SpeechModels, TranscribeOptions, Word
from moltbot.speech.tts import Speakers, Voice

TRANSCRIPT_FORMATS: Final = ("json", "text", "srt", "vtt", "verbose_json")
STREAMED_WHOLE: Final = frozenset({"wav", "flac"})  # formats whose header holds the length: made whole
_LANGUAGE_NAMES: Final = {
    "en": "english",
    "zh": "chinese",
    "de": "german",
    "es": "spanish",
    "fr": "french",
    "ja": "japanese",
    "ru": "russian",
    "ko": "korean",
    "pt": "portuguese",
    "it": "italian",
}
T = TypeVar("T")


class SpeechError(Exception):
    """Bad input for a speech route; `param` names the field."""

    def __init__(self, message: str, param: str | None, code: str = "invalid_audio") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass(slots=True, frozen=True)
class SpeechLimits:
    max_bytes: int = 25 << 20  # of an uploaded recording (OpenAI's limit)
    max_seconds: float = 1800.0  # of an uploaded recording
    max_input_chars: int = 4096  # of text to speak
    threads: int = 2


@dataclass(slots=True)
class Reading:
    language: str
    duration: float  # seconds of audio
    segments: AsyncIterator[Segment]


@dataclass(slots=True)
class TranscriptResult:
    text: str
    language: str
    duration: float
    segments: list[Segment] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the work


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def subtitles(segments: list[Segment], fmt: str) -> str:
    """SRT or WebVTT cues, one per segment."""
    separator = "," if fmt == "srt" else "."
    cues = []
    for number, segment in enumerate(segments, start=1):
        span = f"{_timestamp(segment.start, separator)} --> {_timestamp(segment.end, separator)}"
        cue = f"{span}\n{segment.text.strip()}\n"
        cues.append(f"{number}\n{cue}" if fmt == "srt" else cue)
    body = "\n".join(cues)
    return body if fmt == "srt" else "WEBVTT\n\n" + body


def transcript_body(result: TranscriptResult, fmt: str, task: str, words: bool) -> dict[str, Any] | str:
    """The response in `fmt`: a JSON object for json and verbose_json, text otherwise."""
    usage = {"type": "duration", "seconds": round(result.duration, 3)}
    if fmt == "json":
        return {"text": result.text, "usage": usage}
    if fmt == "text":
        return result.text + "\n"
    if fmt in ("srt", "vtt"):
        return subtitles(result.segments, fmt)
    body: dict[str, Any] = {
        "task": task,
        "language": _LANGUAGE_NAMES.get(result.language, result.language),
        "duration": round(result.duration, 3),
        "text": result.text,
        "segments": [
            {
                "id": s.id,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": s.tokens,
                "temperature": s.temperature,
                "avg_logprob": round(s.avg_logprob, 5),
                "compression_ratio": round(s.compression_ratio, 5),
                "no_speech_prob": round(s.no_speech_prob, 5),
            }
            for s in result.segments
        ],
        "usage": usage,
    }
    if words:
        body["words"] = [_word(w) for s in result.segments for w in s.words]
    return body


def _word(word: Word) -> dict[str, Any]:
    return {"word": word.word.strip(), "start": round(word.start, 3), "end": round(word.end, 3)}


class SpeechService:
    def __init__(self, limits: SpeechLimits, cache: Path | None = None, default_model: str | None = None) -> None:
        """`cache`: where speech models assembled from pieces are placed (the data directory's)."""
        self.limits = limits
        self.recognizers = SpeechModels(limits.threads, cache, default_model)
        self.speakers = Speakers(limits.threads)
        self.speakers.voices()  # espeak-ng's list read once, here, not on the event loop
        self._limiter = anyio.CapacityLimiter(limits.threads)

    async def _run(self, function: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(function, *args, limiter=self._limiter)

    # -- speech to text ------------------------------------------------------------------------

    async def _decode(self, data: bytes) -> Audio:
        try:
            audio: Audio = await self._run(decode, data, self.limits.max_seconds)
        except AudioError as exc:
            raise SpeechError(str(exc), "file") from None
        return audio

    async def read(self, data: bytes, model: str | None, options: TranscribeOptions) -> Reading:
        """Start reading a recording: its language and length, and its segments as the engine reads
        them. Raises SpeechError (a bad file, model or language) before any segment."""
        try:
            engine = self.recognizers.get(model, options.language)
        except SpeechModelError as exc:
            raise SpeechError(str(exc), exc.param or "model", "model_not_found") from None
        audio = await self._decode(data)
        try:
            transcript = await self._run(engine.transcribe, audio, options)  # language detection and VAD
        except SpeechModelError as exc:
            raise SpeechError(str(exc), exc.param) from None
        return Reading(transcript.language, transcript.duration, self._each(transcript.segments))

    async def _each(self, iterator: Iterator[T]) -> AsyncIterator[T]:
        """A blocking iterator's items, each made in a worker thread; closed when the reader stops."""
        try:
            while True:
                item = await self._run(next, iterator, None)
                if item is None:
                    return
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    async def transcribe(self, data: bytes, model: str | None, options: TranscribeOptions) -> TranscriptResult:
        started = time.perf_counter()
        reading = await self.read(data, model, options)
        found = [s async for s in reading.segments]
        text = "".join(s.text for s in found).strip()
        return TranscriptResult(text, reading.language, reading.duration, found, time.perf_counter() - started)

    def recognizer(self, model: str | None, language: str | None = None) -> Engine:
        try:
            return self.recognizers.get(model, language)
        except SpeechModelError as exc:
            raise SpeechError(str(exc), exc.param or "model", "model_not_found") from None

    async def listen(self, samples: np.ndarray, model: str | None = None, language: str | None = None) -> str:
        """16 kHz samples already in memory (a live turn) to text, greedy (beam 1: the latency counts)."""
        engine = self.recognizer(model, language)
        try:
            text: str = await self._run(engine.transcribe_turn, samples.astype(np.float32), language)
        except SpeechModelError as exc:
            raise SpeechError(str(exc), exc.param or "language") from None
        return text

    # -- text to speech ------------------------------------------------------------------------

    def voice(self, model: str | None, voice: str) -> Voice:
        try:
            return self.speakers.resolve(model, voice)
        except SpeechModelError as exc:
            raise SpeechError(str(exc), exc.param or "voice", "voice_not_found") from None

    def check_speech(self, text: str, fmt: str, speed: float) -> None:
        if not text.strip():
            raise SpeechError("input is empty", "input", "invalid_value")
        if len(text) > self.limits.max_input_chars:
            raise SpeechError(
                f"input is longer than {self.limits.max_input_chars} characters", "input", "invalid_value"
            )
        if fmt not in FORMATS:
            raise SpeechError(
                f"response_format {fmt!r} cannot be produced here (formats: {', '.join(FORMATS)})",
                "response_format",
                "unsupported_format",
            )
        if not 0.25 <= speed <= 4.0:
            raise SpeechError("speed must be between 0.25 and 4.0", "speed", "invalid_value")

    async def sentences(self, voice: Voice, text: str, speed: float) -> AsyncIterator[np.ndarray]:
        """The speech of each sentence (float32 at voice.rate) as it is made."""
        try:
            async for samples in self._each(self.speakers.speak(voice, text, speed)):
                yield samples
        except SpeechModelError as exc:
            raise SpeechError(str(exc), exc.param or "voice") from None

    async def speech(self, voice: Voice, text: str, speed: float, fmt: str) -> AsyncIterator[bytes]:
        """Encoded audio: per sentence for mp3, opus and pcm (a player starts on the first); whole for
        wav and flac, whose headers hold the length."""
        if fmt in STREAMED_WHOLE:
            pieces = [s async for s in self.sentences(voice, text, speed)]
            joined = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
            yield await self._run(encode, joined, voice.rate, fmt)
            return
        async for samples in self.sentences(voice, text, speed):
            yield await self._run(encode, samples, voice.rate, fmt)

    async def speech_events(self, voice: Voice, text: str, speed: float, fmt: str) -> AsyncIterator[dict[str, Any]]:
        """speech.audio.delta events (base64 audio per sentence), then speech.audio.done."""
        seconds = 0.0
        async for samples in self.sentences(voice, text, speed):
            seconds += len(samples) / voice.rate
            chunk = await self._run(encode, samples, voice.rate, fmt)
            yield {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode("ascii")}
        yield {
            "type": "speech.audio.done",
            "usage": {"input_characters": len(text), "output_audio_seconds": round(seconds, 3)},
        }
