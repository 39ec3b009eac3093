"""The live voice loop through the real server's WebSocket (OpenAI's Realtime events): speech in,
Silero VAD, Whisper, the 0.5B instruct model, Piper clause by clause out; barge-in; keys; bad events."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import soundfile
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from moltbot.speech.audio import resample
from tests.helpers import INSTRUCT_MODEL, START_TIMEOUT_S, Server, create_key, running_server

RATE = 16_000
WAIT_S = 120.0


@pytest.fixture(scope="module")
def server(make_data_dir: Callable[..., Path]) -> Iterator[Server]:
    env = {
        "MOLTBOT_MODELS": json.dumps([INSTRUCT_MODEL]),
        "MOLTBOT_REALTIME_IDLE_S": "30",
        "MOLTBOT_REALTIME_SEND_TIMEOUT_S": "2",
    }
    with running_server(make_data_dir("realtime"), env) as srv:
        srv.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield srv


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return create_key(server.data_dir, "audio", name="voice")


def speech(server: Server, text: str) -> np.ndarray:
    """`text` spoken by the server's Piper voice, as 16 kHz float32."""
    with server.client() as client:
        response = client.post("/v1/audio/speech", json={"input": text, "response_format": "wav"})
    assert response.status_code == 200, response.text
    samples, rate = soundfile.read(io.BytesIO(response.content), dtype="float32")
    return resample(samples, rate, RATE)


def pcm(samples: np.ndarray) -> str:
    return base64.b64encode((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()).decode()


def open_session(server: Server, key: str, session_id: str | None = None, **kwargs: Any) -> ClientConnection:
    """A live conversation; `session_id`: the stored session it continues."""
    url = server.base_url.replace("https://", "wss://").removesuffix("/v1") + "/v1/realtime"
    if session_id:
        url += f"?session_id={session_id}"
    headers = kwargs.pop("headers", {"Authorization": f"Bearer {key}"})
    return connect(url, ssl=server.verify, additional_headers=headers, open_timeout=30, max_size=None, **kwargs)


def send_audio(ws: ClientConnection, samples: np.ndarray, chunk_ms: int = 100) -> None:
    step = RATE * chunk_ms // 1000
    for start in range(0, len(samples), step):
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm(samples[start : start + step])}))


def events_until(ws: ClientConnection, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    seen = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        event = json.loads(ws.recv(timeout=deadline - time.monotonic()))
        event["_at"] = time.monotonic()
        seen.append(event)
        if done(event):
            return seen
    raise AssertionError(f"no closing event in {WAIT_S} s: {[e['type'] for e in seen]}")


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds), dtype=np.float32)


def test_a_spoken_question_gets_a_spoken_answer(server: Server, key: str) -> None:
    question = speech(server, "What is the capital of France?")
    with open_session(server, key) as ws:
        created = json.loads(ws.recv(timeout=30))
        assert created["type"] == "session.created" and created["session"]["turn_detection"]["type"] == "server_vad"
        ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {"instructions": "Answer in one short sentence.", "temperature": 0.0},
                }
            )
        )
        assert json.loads(ws.recv(timeout=30))["type"] == "session.updated"
        send_audio(ws, np.concatenate([silence(0.5), question, silence(1.2)]))
        events = events_until(ws, lambda e: e["type"] == "response.done")
    kinds = [e["type"] for e in events]
    for kind in (
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.audio_transcript.delta",
        "response.audio.delta",
        "response.audio.done",
        "response.audio_transcript.done",
    ):
        assert kind in kinds, (kind, kinds)
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.speech_stopped")
    started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
    assert 300 <= started["audio_start_ms"] <= 900  # the speech began after half a second of silence
    heard = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert {"capital", "france"} <= set(heard["transcript"].casefold().replace("?", "").split()), heard
    done = events[-1]["response"]
    answer = next(e for e in events if e["type"] == "response.audio_transcript.done")["transcript"]
    assert done["status"] == "completed" and "paris" in answer.casefold(), answer
    audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta")
    spoken = len(audio) / 2 / RATE
    assert spoken > 0.8 and done["usage"]["output_audio_seconds"] == pytest.approx(spoken, abs=0.1)
    # The first audio came before the answer's text was complete (clause by clause), or the answer was
    # one clause long.
    first_audio = kinds.index("response.audio.delta")
    assert first_audio < kinds.index("response.audio_transcript.done")


def test_a_pause_inside_a_question_is_not_its_end(server: Server, key: str) -> None:
    # The turn is transcribed and answered ahead at the first pause (the answer held back): a speaker
    # who goes on makes that guess void, and only the whole question is answered.
    first, rest = speech(server, "What is the capital"), speech(server, "of the country France?")
    with open_session(server, key) as ws:
        ws.recv(timeout=30)
        ws.send(json.dumps({"type": "session.update", "session": {"temperature": 0.0}}))
        ws.recv(timeout=30)
        send_audio(ws, np.concatenate([silence(0.3), first, silence(0.3), rest, silence(1.2)]))
        events = events_until(ws, lambda e: e["type"] == "response.done")
    kinds = [e["type"] for e in events]
    assert kinds.count("input_audio_buffer.speech_stopped") == 1 and kinds.count("response.created") == 1
    assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("response.created")
    heard = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert {"capital", "country"} <= set(heard["transcript"].casefold().split()), heard  # one turn, both parts
    assert events[-1]["response"]["status"] == "completed"


def test_speaking_over_the_answer_cancels_it(server: Server, key: str) -> None:
    story = speech(server, "Tell me a long story about a dragon and a knight.")
    interruption = speech(server, "Stop, please.")
    with open_session(server, key) as ws:
        ws.recv(timeout=30)
        send_audio(ws, np.concatenate([silence(0.3), story, silence(1.0)]))
        events_until(ws, lambda e: e["type"] == "response.audio.delta")  # the answer is being spoken
        send_audio(ws, np.concatenate([silence(0.2), interruption]))
        events = events_until(ws, lambda e: e["type"] == "response.done")
        started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
        done = events[-1]
        assert done["response"]["status"] == "cancelled"
        assert done["_at"] - started["_at"] < 0.5  # barge-in: the answer stops as the speaker starts
        send_audio(ws, silence(1.2))  # the interruption ends: it is heard and answered in turn
        after = events_until(ws, lambda e: e["type"] == "response.done")
        heard = [e for e in after if e["type"] == "conversation.item.input_audio_transcription.completed"]
        assert heard and "stop" in heard[0]["transcript"].casefold()


def test_turns_go_into_a_stored_session(server: Server, key: str) -> None:
    voice_key = create_key(server.data_dir, "audio,sessions", name="voice-sessions")
    with server.client(voice_key) as client:
        created = client.post(
            "/v1/sessions", json={"model": INSTRUCT_MODEL, "system_prompt": "Answer in one short sentence."}
        )
        assert created.status_code == 201, created.text
        session_id = created.json()["id"]
    question = speech(server, "What is the capital of France?")
    with open_session(server, voice_key, session_id=session_id) as ws:
        opened = json.loads(ws.recv(timeout=30))["session"]
        assert opened["session_id"] == session_id and opened["instructions"] == "Answer in one short sentence."
        ws.send(json.dumps({"type": "session.update", "session": {"temperature": 0.0}}))
        ws.recv(timeout=30)
        send_audio(ws, np.concatenate([silence(0.3), question, silence(1.2)]))
        events = events_until(ws, lambda e: e["type"] == "response.done")
    answer = events[-1]["response"]["output"][0]["content"][0]["transcript"]
    heard = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    with server.client(voice_key) as client:
        stored = client.get(f"/v1/sessions/{session_id}").json()["messages"]
    assert [(m["role"], m["content"], m["status"]) for m in stored] == [
        ("user", heard["transcript"], "complete"),
        ("assistant", answer, "complete"),
    ]
    # The next live conversation on it starts from that history; others' sessions and keys without
    # the sessions scope are refused in the handshake.
    with open_session(server, voice_key, session_id=session_id) as ws:
        assert json.loads(ws.recv(timeout=30))["session"]["session_id"] == session_id
    for other_key, other_session in ((key, session_id), (voice_key, "sess_" + "0" * 24)):
        with pytest.raises(InvalidStatus):
            open_session(server, other_key, session_id=other_session)


def test_push_to_talk_with_partial_transcripts(server: Server, key: str) -> None:
    # The client decides the turn (no server VAD), asks for partial transcripts, and sends commit and
    # response.create back to back: the answer waits for the committed turn's transcript.
    question = speech(server, "Please tell me, what is the capital city of France?")
    with open_session(server, key) as ws:
        ws.recv(timeout=30)
        update = {
            "turn_detection": None,
            "input_audio_transcription": {"partial_results": True},
            "temperature": 0.0,
            "instructions": "Answer in one short sentence.",
        }
        ws.send(json.dumps({"type": "session.update", "session": update}))
        assert json.loads(ws.recv(timeout=30))["session"]["input_audio_transcription"]["partial_results"] is True
        step = RATE // 10
        for start in range(0, len(question), step):  # at the pace of speech, as a microphone sends it
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm(question[start : start + step])}))
            time.sleep(0.1)
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        ws.send(json.dumps({"type": "response.create"}))
        events = events_until(ws, lambda e: e["type"] == "response.done")
    kinds = [e["type"] for e in events]
    deltas = [e["delta"] for e in events if e["type"] == "conversation.item.input_audio_transcription.delta"]
    heard = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert deltas and kinds.index("conversation.item.input_audio_transcription.delta") < kinds.index(
        "conversation.item.input_audio_transcription.completed"
    )
    assert "".join(deltas).split()[0].casefold().strip(",") == heard["transcript"].split()[0].casefold().strip(",")
    assert kinds.index("conversation.item.input_audio_transcription.completed") < kinds.index("response.created")
    answer = events[-1]["response"]["output"][0]["content"][0]["transcript"]
    assert "paris" in answer.casefold(), answer


# The SDK opens its connection outside a `with` block, which websockets 17 warns about.
@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
def test_the_openai_sdk_talks_to_it(server: Server, key: str) -> None:
    # OpenAI's Python SDK (its beta Realtime client): it names its own model, sends the key as a bearer
    # header and parses every event; push to talk with a commit and response.create.
    question = speech(server, "What is the capital of France?")
    http = httpx.Client(verify=server.verify)
    client = openai.OpenAI(base_url=server.base_url, api_key=key, http_client=http, max_retries=0)
    options = {"ssl": server.verify, "open_timeout": 30}
    with client.beta.realtime.connect(model="gpt-4o-realtime-preview", websocket_connection_options=options) as conn:
        conn.session.update(session={"turn_detection": None, "temperature": 0.6, "instructions": "Answer briefly."})
        step = RATE // 5
        for start in range(0, len(question), step):
            conn.input_audio_buffer.append(audio=pcm(question[start : start + step]))
        conn.input_audio_buffer.commit()
        conn.response.create()
        kinds, transcript, audio = [], "", 0
        for event in conn:
            kinds.append(event.type)
            if event.type == "conversation.item.input_audio_transcription.completed":
                transcript = event.transcript
            if event.type == "response.audio.delta":
                audio += len(base64.b64decode(event.delta))
            if event.type == "response.done":
                break
    http.close()
    assert kinds[0] == "session.created" and "session.updated" in kinds and "error" not in kinds, kinds
    assert "france" in transcript.casefold() and audio > RATE  # more than half a second of answer
    assert event.type == "response.done" and event.response.status == "completed"


def test_keys_are_checked_in_the_handshake(server: Server, key: str) -> None:
    with pytest.raises(InvalidStatus) as missing:
        open_session(server, key, headers={})
    assert missing.value.response.status_code == 403
    chat_only = create_key(server.data_dir, "chat", name="no-audio")
    with pytest.raises(InvalidStatus):
        open_session(server, chat_only)
    # A browser cannot set headers: the key rides in a subprotocol, as OpenAI's browser clients send it.
    with open_session(server, key, headers={}, subprotocols=["realtime", f"openai-insecure-api-key.{key}"]) as ws:
        assert ws.subprotocol == "realtime" and json.loads(ws.recv(timeout=30))["type"] == "session.created"


def test_bad_events_get_errors_and_the_session_goes_on(server: Server, key: str) -> None:
    with open_session(server, key) as ws:
        ws.recv(timeout=30)
        for bad, code in (
            ("not json", "invalid_event"),
            (json.dumps([1, 2]), "invalid_event"),
            (json.dumps({"type": "teleport"}), "unknown_event"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "@@@"}), "invalid_audio"),
            (
                json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()}),
                "invalid_audio",
            ),
            (json.dumps({"type": "input_audio_buffer.commit"}), "input_audio_buffer_commit_empty"),
        ):
            ws.send(bad)
            event = json.loads(ws.recv(timeout=30))
            assert event["type"] == "error" and event["error"]["code"] == code, (bad, event)
        ws.send(b"\x00\x01 binary")
        assert json.loads(ws.recv(timeout=30))["error"]["code"] == "invalid_event"
        ws.send(json.dumps({"type": "session.update", "session": {"voice": "robot"}}))
        assert json.loads(ws.recv(timeout=30))["error"]["param"] == "voice"
        ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": {"silence_duration_ms": 5}}}))
        assert json.loads(ws.recv(timeout=30))["type"] == "error"
        ws.send(json.dumps({"type": "session.update", "session": {"input_audio_transcription": {"model": "nope"}}}))
        assert json.loads(ws.recv(timeout=30))["error"]["param"] == "model"
        ws.send(json.dumps({"type": "session.update", "session": {"input_audio_transcription": {"language": "de"}}}))
        transcription = json.loads(ws.recv(timeout=30))["session"]["input_audio_transcription"]
        assert transcription["model"] == "whisper-base" and transcription["language"] == "de"  # multilingual
        ws.send(json.dumps({"type": "session.update", "session": {"voice": "alloy"}}))
        assert json.loads(ws.recv(timeout=30))["session"]["voice"] == "joe"  # still serving
        ws.send("x" * (2 << 20))  # one event over the 1 MiB bound: the connection is closed
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    with httpx.Client(verify=server.verify) as client:
        assert client.get(server.base_url.removesuffix("/v1") + "/healthz").status_code == 200


def test_a_client_that_stops_reading_is_let_go(server: Server, key: str) -> None:
    # A client with a tiny receive window sends events that each get an answer (an error) and never
    # reads: the buffers fill, the server's send waits MOLTBOT_REALTIME_SEND_TIMEOUT_S (2 s here) and
    # drops the connection; others are served meanwhile and after.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    url = server.base_url.replace("https://", "wss://").removesuffix("/v1") + "/v1/realtime"
    deadline = time.monotonic() + WAIT_S
    with connect(url, sock=raw, ssl=server.verify, additional_headers={"Authorization": f"Bearer {key}"}) as stuck:

        def flood() -> None:
            event = json.dumps({"type": "teleport", "padding": "x" * 200})
            with contextlib.suppress(ConnectionClosed, OSError):  # ends when the server drops the connection
                for _ in range(200_000):
                    if time.monotonic() > deadline:
                        return
                    stuck.send(event)

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        while "the client stopped reading" not in server.stderr():
            assert time.monotonic() < deadline, "the server kept a client that stopped reading"
            time.sleep(0.2)
        with open_session(server, key) as ws:  # the server goes on serving others
            ws.recv(timeout=30)
            ws.send(json.dumps({"type": "session.update", "session": {"temperature": 0.1}}))
            assert json.loads(ws.recv(timeout=30))["type"] == "session.updated"
        sender.join(timeout=max(1.0, deadline - time.monotonic()))
        assert not sender.is_alive()
