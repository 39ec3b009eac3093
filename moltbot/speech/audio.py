"""Audio in and out: an upload decoded to 16 kHz mono samples, and samples encoded for a client.

Decoding is FFmpeg's, through PyAV (the library faster-whisper itself uses): WAV, MP3, FLAC, Ogg
(Vorbis, Opus), WebM, M4A and the rest FFmpeg reads, at any sample rate and channel count, resampled
to 16 kHz mono float32. Untrusted input is bounded: the container's declared duration is checked first,
and decoding stops at the limit whatever the file claims (a small file of compressed silence cannot
grow past it). Encoding is libsndfile's, through soundfile: WAV, FLAC, MP3, Opus (in Ogg), and raw PCM
(16-bit little-endian at 24 kHz, as OpenAI's `pcm`).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

RATE: Final = 16_000  # what speech recognition reads
PCM_RATE: Final = 24_000  # OpenAI's `pcm` response format
OPUS_RATE: Final = 48_000  # the rates Opus takes are 8, 12, 16, 24 and 48 kHz
FORMATS: Final = ("mp3", "opus", "flac", "wav", "pcm")  # what /v1/audio/speech can produce
MEDIA_TYPES: Final = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


class AudioError(Exception):
    """A file that is not audio, is damaged, or is too long; the message is safe to show."""


@dataclass(slots=True, frozen=True)
class Audio:
    samples: np.ndarray  # float32, mono, at `rate`
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def decode(data: bytes, max_seconds: float) -> Audio:
    """The upload as 16 kHz mono float32; raises AudioError."""
    import av

    if not data:
        raise AudioError("the file is empty")
    limit = int(max_seconds * RATE)
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError("the file holds no audio stream")
            declared = container.duration / 1_000_000 if container.duration else 0.0
            if declared > max_seconds + 1:
                raise AudioError(f"the audio is {declared:.0f} s long; at most {max_seconds:g} s")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
            pieces: list[np.ndarray] = []
            total = 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    piece = out.to_ndarray().reshape(-1)
                    pieces.append(piece)
                    total += len(piece)
                if total > limit:
                    raise AudioError(f"the audio is longer than {max_seconds:g} s")
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
    except AudioError:
        raise
    except (av.FFmpegError, ValueError, IndexError, OSError, EOFError):
        raise AudioError("the file is not audio this server can read, or it is damaged") from None
    samples = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, dtype=np.float32)
    if not len(samples):
        raise AudioError("the file holds no audio samples")
    return Audio(samples[:limit], RATE)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Samples at `rate` as samples at `target` (polyphase, anti-aliased)."""
    if rate == target or not len(samples):
        return samples.astype(np.float32)
    from scipy.signal import resample_poly

    common = math.gcd(rate, target)
    return np.asarray(resample_poly(samples, target // common, rate // common), dtype=np.float32)


def pcm16(samples: np.ndarray) -> bytes:
    return bytes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """Samples (float32 mono) in a response format of FORMATS."""
    import soundfile

    if fmt == "pcm":
        return pcm16(resample(samples, rate, PCM_RATE))
    out = io.BytesIO()
    options: dict[str, Any] = {
        "wav": {"format": "WAV", "subtype": "PCM_16"},
        "flac": {"format": "FLAC", "subtype": "PCM_16"},
        "mp3": {"format": "MP3", "subtype": "MPEG_LAYER_III"},
        "opus": {"format": "OGG", "subtype": "OPUS"},
    }[fmt]
    if fmt == "opus":
        samples, rate = resample(samples, rate, OPUS_RATE), OPUS_RATE
    soundfile.write(out, np.clip(samples, -1.0, 1.0), rate, **options)
    return out.getvalue()
