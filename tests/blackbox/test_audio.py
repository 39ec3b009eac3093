"""OpenAI's audio routes through the real server with the real engines: Piper and espeak-ng speak,
faster-whisper (Whisper tiny.en) listens; the official SDK's calls; each bad input."""

from __future__ import annotations

import base64
import io
import json
import re
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile

from tests.helpers import START_TIMEOUT_S, Server, create_key, require_tool, running_server

SENTENCE = "The quick brown fox jumps over the lazy dog. Please call me back tomorrow morning."
WORDS = {"quick", "brown", "fox", "jumps", "lazy", "dog", "call", "back", "tomorrow", "morning"}


@pytest.fixture(scope="module")
def server(make_data_dir: Callable[..., Path]) -> Iterator[Server]:
    env = {"MOLTBOT_AUDIO_MAX_SECONDS": "120", "MOLTBOT_AUDIO_MAX_BYTES": str(4 << 20)}
    with running_server(make_data_dir("audio"), env) as srv:
        srv.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client(create_key(server.data_dir, "audio", name="voice")) as http:
        yield http


@pytest.fixture(scope="module")
def spoken(client: httpx.Client) -> bytes:
    """SENTENCE as a WAV made by the server's default voice (Piper)."""
    response = client.post("/v1/audio/speech", json={"model": "tts-1", "input": SENTENCE, "response_format": "wav"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav" and response.headers["x-voice"] == "joe"
    return response.content


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.casefold()))


def transcribe(client: httpx.Client, audio: bytes, name: str = "speech.wav", **fields: str) -> httpx.Response:
    return client.post("/v1/audio/transcriptions", files={"file": (name, audio)}, data=fields)


def test_speech_transcribes_back_to_its_text(client: httpx.Client, spoken: bytes) -> None:
    samples, rate = soundfile.read(io.BytesIO(spoken))
    assert rate == 22050 and 3.0 < len(samples) / rate < 12.0
    response = transcribe(client, spoken)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(WORDS & words(body["text"])) >= 8, body  # what tiny.en hears of Piper's voice
    assert body["usage"]["type"] == "duration" and body["usage"]["seconds"] == pytest.approx(len(samples) / rate, 0.05)


def test_pocketsphinx_transcribes_too(client: httpx.Client, spoken: bytes) -> None:
    assert "pocketsphinx-en-us" in client.get("/v1/audio/voices").json()["models"]
    response = transcribe(client, spoken, model="pocketsphinx-en-us", response_format="verbose_json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(WORDS & words(body["text"])) >= 5, body  # its error rate is higher than Whisper's
    assert body["language"] == "english" and body["segments"]
    refused = transcribe(client, spoken, model="pocketsphinx-en-us", language="zh")
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "language"


def test_transcript_formats(client: httpx.Client, spoken: bytes) -> None:
    text = transcribe(client, spoken, response_format="text")
    assert text.headers["content-type"].startswith("text/plain") and "fox" in text.text.casefold()
    srt = transcribe(client, spoken, response_format="srt").text
    assert re.match(r"1\n00:00:0\d,\d{3} --> 00:00:\d\d,\d{3}\n\S", srt), srt
    vtt = transcribe(client, spoken, response_format="vtt").text
    assert vtt.startswith("WEBVTT\n\n00:00:0") and "-->" in vtt
    verbose = transcribe(client, spoken, response_format="verbose_json", **{"timestamp_granularities[]": "word"}).json()
    assert verbose["task"] == "transcribe" and verbose["language"] == "english"
    assert verbose["segments"] and all(s["end"] > s["start"] for s in verbose["segments"])
    timed = verbose["words"]
    assert len(timed) >= 12 and all(w["end"] >= w["start"] for w in timed)
    assert [w["start"] for w in timed] == sorted(w["start"] for w in timed)
    fox = next(w for w in timed if w["word"].casefold().strip(".,") == "fox")
    assert 0.0 < fox["start"] < verbose["duration"] / 2  # the first sentence's word, early on


def test_a_streamed_transcription_sends_deltas_then_the_text(client: httpx.Client, spoken: bytes) -> None:
    events = []
    with client.stream(
        "POST", "/v1/audio/transcriptions", files={"file": ("s.wav", spoken)}, data={"stream": "true"}
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    deltas = [e for e in events if e["type"] == "transcript.text.delta"]
    assert deltas and events[-1]["type"] == "transcript.text.done"
    assert "".join(d["delta"] for d in deltas).strip() == events[-1]["text"] and "fox" in events[-1]["text"].casefold()


def test_every_speech_format_decodes(client: httpx.Client) -> None:
    seconds = {}
    for fmt in ("mp3", "opus", "flac", "wav", "pcm"):
        response = client.post("/v1/audio/speech", json={"input": "One two three.", "response_format": fmt})
        assert response.status_code == 200, (fmt, response.text)
        if fmt == "pcm":
            assert response.headers["content-type"] == "audio/pcm" and len(response.content) % 2 == 0
            seconds[fmt] = len(response.content) / 2 / 24000  # 16-bit mono at 24 kHz, as OpenAI's pcm
        else:
            samples, rate = soundfile.read(io.BytesIO(response.content))
            seconds[fmt] = len(samples) / rate
    assert all(abs(s - seconds["wav"]) < 0.15 for s in seconds.values()), seconds  # the same speech in each
    slow = client.post("/v1/audio/speech", json={"input": "One two three.", "response_format": "wav", "speed": 0.5})
    samples, rate = soundfile.read(io.BytesIO(slow.content))
    assert len(samples) / rate > 1.5 * seconds["wav"]


def test_speech_streams_sentence_by_sentence_as_events(client: httpx.Client) -> None:
    text = "First sentence here. Second sentence here. Third one."
    events = []
    with client.stream(
        "POST", "/v1/audio/speech", json={"input": text, "response_format": "pcm", "stream_format": "sse"}
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    deltas = [base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) == 3 and all(len(d) > 4800 for d in deltas)  # one per sentence, each over 0.1 s
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["input_characters"] == len(text)


def test_espeak_voices_speak_english_and_chinese(client: httpx.Client) -> None:
    require_tool("espeak-ng")
    voices = {v["id"]: v for v in client.get("/v1/audio/voices").json()["data"]}
    assert voices["joe"]["engine"] == "piper" and {"espeak:en-us", "espeak:cmn"} <= set(voices)
    english = client.post(
        "/v1/audio/speech", json={"input": SENTENCE, "voice": "espeak:en-us", "response_format": "wav"}
    )
    assert english.status_code == 200 and english.headers["x-voice"] == "espeak:en-us"
    heard = transcribe(client, english.content).json()["text"]
    assert len(WORDS & words(heard)) >= 6, heard
    chinese = client.post(
        "/v1/audio/speech",
        json={"input": "\u4f60\u597d\uff0c\u4e16\u754c\u3002", "voice": "espeak:cmn", "response_format": "flac"},
    )
    samples, rate = soundfile.read(io.BytesIO(chinese.content))
    assert chinese.status_code == 200 and len(samples) / rate > 0.5 and np.abs(samples).max() > 0.05


def test_the_openai_sdk_speaks_and_listens(server: Server) -> None:
    http = httpx.Client(verify=server.verify, timeout=120)
    oai = openai.OpenAI(base_url=server.base_url, api_key=server.admin_key, max_retries=0, http_client=http)
    with oai.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=SENTENCE, response_format="wav"
    ) as response:
        audio = b"".join(response.iter_bytes())
    with wave.open(io.BytesIO(audio)) as heard:
        assert heard.getframerate() == 22050 and heard.getnframes() > 22050
    transcript = oai.audio.transcriptions.create(model="whisper-1", file=("speech.wav", audio))
    assert len(WORDS & words(transcript.text)) >= 8, transcript.text
    http.close()


def test_english_speech_translates_to_english(client: httpx.Client, spoken: bytes) -> None:
    # (The SDK marks audio.translations deprecated; the route is OpenAI's, called here directly.)
    response = client.post("/v1/audio/translations", files={"file": ("s.wav", spoken)}, data={"model": "whisper-1"})
    assert response.status_code == 200, response.text
    assert len(WORDS & words(response.json()["text"])) >= 8


def test_german_speech_goes_to_the_multilingual_model(client: httpx.Client) -> None:
    german = client.post(
        "/v1/audio/speech",
        json={
            "input": "Guten Morgen, heute ist das Wetter sehr schön.",
            "voice": "espeak:de",
            "response_format": "wav",
        },
    )
    assert german.status_code == 200, german.text
    assert "whisper-base" in client.get("/v1/audio/voices").json()["models"]
    heard = transcribe(client, german.content, language="de", response_format="verbose_json")
    assert heard.status_code == 200, heard.text
    assert heard.json()["language"] == "german" and "guten morgen" in heard.json()["text"].casefold(), heard.json()
    english = client.post(
        "/v1/audio/translations", files={"file": ("de.wav", german.content)}, data={"model": "whisper-base"}
    )
    assert english.status_code == 200, english.text
    assert "good morning" in english.json()["text"].casefold(), english.json()


def test_bad_audio_input_is_a_clear_400(client: httpx.Client, server: Server) -> None:
    def error(response: httpx.Response, status: int = 400) -> dict[str, str]:
        assert response.status_code == status, response.text
        assert "Traceback" not in response.text and str(server.data_dir) not in response.text
        return response.json()["error"]  # type: ignore[no-any-return]

    assert error(transcribe(client, b"not audio at all, just text" * 40, "notes.wav"))["param"] == "file"
    assert error(transcribe(client, b"", "empty.wav"))["param"] == "file"
    riff = io.BytesIO()
    soundfile.write(riff, np.zeros(16000, dtype=np.float32), 16000, format="WAV")
    assert error(transcribe(client, riff.getvalue()[:30], "cut.wav"))["param"] == "file"  # header cut off
    long = io.BytesIO()  # 10 minutes of silence: 20 KB as FLAC, over the 120 s this server allows
    soundfile.write(long, np.zeros(16000 * 600, dtype=np.int16), 16000, format="FLAC")
    assert "120" in error(transcribe(client, long.getvalue(), "long.flac"))["message"]
    big = transcribe(client, b"\x00" * (5 << 20), "big.wav")
    assert big.status_code == 413
    spoken_tone = io.BytesIO()
    soundfile.write(spoken_tone, np.zeros(8000, dtype=np.float32), 8000, format="WAV")  # 8 kHz: resampled
    assert transcribe(client, spoken_tone.getvalue()).status_code == 200
    named = transcribe(client, riff.getvalue(), model="whisper-tiny.en", language="zh")
    assert error(named)["param"] == "language"  # tiny.en knows English only (unnamed: whisper-base answers)
    assert error(transcribe(client, riff.getvalue(), model="whisper-huge"))["param"] == "model"
    assert error(transcribe(client, riff.getvalue(), response_format="docx"))["param"] == "response_format"
    speak = "/v1/audio/speech"
    assert error(client.post(speak, json={"input": "hi", "response_format": "aac"}))["param"] == "response_format"
    assert error(client.post(speak, json={"input": "hi", "voice": "robot"}))["param"] == "voice"
    assert error(client.post(speak, json={"input": "hi", "voice": "espeak:klingon"}))["param"] == "voice"
    assert error(client.post(speak, json={"input": "x" * 5000}))["param"] == "input"
    assert error(client.post(speak, json={"input": "  "}))["param"] == "input"
    assert error(client.post(speak, json={"input": "hi", "speed": 9}))["param"] == "speed"
    assert error(client.post(speak, json={"input": "hi", "instructions": "whisper"}))["param"] == "instructions"
    with server.client(create_key(server.data_dir, "chat", name="no-audio")) as other:
        assert other.post(speak, json={"input": "hi"}).status_code == 403
    assert client.get("/healthz").status_code == 200  # still serving
