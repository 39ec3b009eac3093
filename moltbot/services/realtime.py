"""A live voice conversation: the subset of OpenAI's Realtime API a voice client needs, over any
transport that carries JSON events (the gateway's WebSocket route).

Audio in (16 kHz PCM16, base64 in `input_audio_buffer.append`) goes through Silero VAD as it arrives;
when the speaker pauses (`silence_duration_ms`), the utterance is transcribed (faster-whisper), added
to the conversation, and answered: the instruct model's tokens stream out as transcript deltas and are
spoken **clause by clause** (Piper), each clause's audio sent as soon as it is made, not after the whole
answer. When the speaker starts again while an answer is playing (barge-in), the answer is cancelled at
once: its generation stops, and `response.done` says `cancelled` so the client stops playback. The
conversation (text) is kept for the next turn, so the engine's KV cache reuses its prefix. A conversation
opened on a stored session (`StoredConversation`) starts from its history, and each turn is stored there
like a chat turn: the user's transcript when it is final, the answer when it ends (`interrupted` when the
speaker talked over it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from moltbot.engine.types import ChatMessage, Role
from moltbot.services.generation import ChatRequest, GenerationService, Sampling, TextDelta
from moltbot.services.speech import SpeechError, SpeechService
from moltbot.speech.audio import RATE, pcm16, resample
from moltbot.speech.tts import Voice
from moltbot.speech.vad import StreamingVad
from moltbot.storage.sessions import Session, SessionRepository

log = logging.getLogger(__name__)

DEFAULT_INSTRUCTIONS: Final = (
    "You are a helpful voice assistant. Answer in one to three short spoken sentences, without lists, markdown or code."
)
_CLAUSE = re.compile(r"[.!?;:,](?=\s)|[\u3002\uff01\uff1f\uff0c]")
GUESS_AFTER_MS: Final = 96  # of quiet in a turn before its transcript is started ahead of the VAD's decision
MIN_CLAUSE_CHARS: Final = 12
FIRST_WORDS: Final = 4  # a clause shorter than this waits for the next one
MAX_CLAUSE_CHARS: Final = 120  # a clause with no punctuation is cut at a space past this
PARTIAL_EVERY_S: Final = 1.0  # of new speech between two partial transcripts (when they are asked for)


@dataclass(slots=True, frozen=True)
class RealtimeLimits:
    max_event_bytes: int = 1 << 20  # one client event (about 32 s of audio)
    max_utterance_seconds: float = 30.0  # a turn longer than this is committed as it is
    max_history: int = 24  # messages kept in the conversation
    max_response_tokens: int = 256
    max_instructions_chars: int = 8000


Send = Callable[[dict[str, Any]], Awaitable[None]]


class ClientGone(Exception):  # noqa: N818 - a state, not a fault of this code
    """The client stopped taking events (or left): nothing more can be sent to it."""


_ROLES = {"user": Role.USER, "assistant": Role.ASSISTANT}


@dataclass(slots=True, frozen=True)
class StoredConversation:
    """The stored session a live conversation's turns go into (the chat page's, or a client's)."""

    repo: SessionRepository
    owner: str
    session: Session  # as it was when the conversation opened, with its messages

    def history(self, keep: int) -> list[ChatMessage]:
        """The last `keep` user and assistant messages."""
        found = [ChatMessage(_ROLES[m.role], m.content) for m in self.session.messages if m.role in _ROLES]
        return found[-keep:]

    def add(self, role: str, content: str, status: str = "complete") -> None:
        """Append a message (a small write; durable when this returns)."""
        if self.repo.add_message(self.owner, self.session.id, role, content, status=status) is None:
            log.warning("session %s was deleted during a live conversation: a turn was not stored", self.session.id)


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _word(text: str) -> str:
    return text.strip(".,!?;:\"'").casefold()


def agreed_words(said: list[str], before: list[str], now: list[str]) -> list[str]:
    """The words of `now` past those already `said` that two hypotheses in a row agree on (the
    local-agreement rule of streaming Whisper): a partial transcript never takes a word back."""
    common = 0
    for old, new in zip(before, now, strict=False):
        if _word(old) != _word(new):
            break
        common += 1
    return now[len(said) : common] if common > len(said) else []


def split_clause(pending: str, first: bool = False) -> tuple[str, str]:
    """The first speakable clause of `pending` and the rest ("" when none is complete yet). The first
    clause of an answer may also end after FIRST_WORDS words (followed by a space: the word is whole),
    so that speech starts before the model reaches its first comma."""
    for match in _CLAUSE.finditer(pending):
        if match.end() >= MIN_CLAUSE_CHARS:
            return pending[: match.end()].strip(), pending[match.end() :]
    words = pending.split(" ")
    if first and len([w for w in words[:-1] if w]) >= FIRST_WORDS:
        cut = len(" ".join(words[:-1]))
        return pending[:cut].strip(), pending[cut:]
    if len(pending) > MAX_CLAUSE_CHARS:
        cut = pending.rfind(" ", 0, MAX_CLAUSE_CHARS)
        if cut > 0:
            return pending[:cut].strip(), pending[cut:]
    return "", pending


@dataclass(slots=True)
class Timing:
    """When the last turn's steps happened (monotonic seconds), for the client and the bench."""

    speech_stopped: float = 0.0
    transcribed: float = 0.0
    first_text: float = 0.0
    first_audio: float = 0.0

    def since_stop(self) -> dict[str, float | None]:
        """Milliseconds from the end of speech (the VAD's decision) to each step, None where not reached."""
        if not self.speech_stopped:
            return {}

        def ms(at: float) -> float | None:
            return round((at - self.speech_stopped) * 1000, 1) if at else None

        return {
            "transcribed_ms": ms(self.transcribed),
            "first_text_ms": ms(self.first_text),
            "first_audio_ms": ms(self.first_audio),
        }


class Outbox:
    """Where one response's events go: straight to the client, or, for an answer started ahead (at the
    speaker's pause, before the VAD has decided the turn is over), held until the turn is confirmed
    and then sent in order; an answer ahead that the speaker talks over is dropped unsent."""

    def __init__(self, session: RealtimeSession, *, held: bool) -> None:
        self.session = session
        self._held: list[tuple[str, dict[str, Any]]] | None = [] if held else None
        self._lock = asyncio.Lock()
        self._then: list[Callable[[], None]] = []

    def when_confirmed(self, action: Callable[[], None]) -> None:
        """Run `action` now if the answer is confirmed, else once it is released (never if dropped)."""
        if self._held is None:
            action()
        else:
            self._then.append(action)

    @property
    def confirmed(self) -> bool:
        return self._held is None

    async def send(self, kind: str, **fields: Any) -> None:
        async with self._lock:
            if self._held is not None:
                self._held.append((kind, fields))
                return
            await self.session.send(kind, **fields)

    async def release(self) -> None:
        async with self._lock:
            held, self._held = self._held or [], None
            timing = self.session.timing
            for kind, fields in held:
                await self.session.send(kind, **fields)
                if kind == "response.audio_transcript.delta" and not timing.first_text:
                    timing.first_text = time.monotonic()
                if kind == "response.audio.delta" and not timing.first_audio:
                    timing.first_audio = time.monotonic()
            then, self._then = self._then, []
        for action in then:
            action()


@dataclass
class RealtimeSession:
    speech: SpeechService
    generation: GenerationService
    model: str
    send_event: Send
    limits: RealtimeLimits = field(default_factory=RealtimeLimits)
    id: str = field(default_factory=lambda: _id("sess"))
    instructions: str = DEFAULT_INSTRUCTIONS
    voice: Voice | None = None
    server_vad: bool = True
    silence_ms: int = 500
    padding_ms: int = 300
    threshold: float = 0.5
    temperature: float = 0.7
    max_tokens: int = 256
    history: list[ChatMessage] = field(default_factory=list)
    timing: Timing = field(default_factory=Timing)
    stored: StoredConversation | None = None
    partial_results: bool = False  # transcription deltas while the speaker talks (Moltbot's option)
    transcription_model: str | None = None  # None: the server's speech model
    language: str | None = None  # of the speaker (None: the model's default or its detection)

    def __post_init__(self) -> None:
        self.voice = self.voice or self.speech.voice(None, "joe")
        if self.stored is not None:
            self.history = self.stored.history(self.limits.max_history)
            if self.stored.session.system_prompt:
                self.instructions = self.stored.session.system_prompt
        self.vad = StreamingVad(self.threshold, self.silence_ms)
        self._audio: list[np.ndarray] = []  # the turn being spoken (with padding before it)
        self._lookback = np.zeros(0, dtype=np.float32)  # the last padding_ms before speech starts
        self._buffered = 0
        self._send_lock = asyncio.Lock()
        self._response: asyncio.Task[None] | None = None
        self._turn: asyncio.Task[None] | None = None
        self._item: str | None = None
        # The transcript of the turn so far, started when the speaker first pauses (before the VAD's
        # decision): when the pause does end the turn, the transcript is (nearly) ready.
        self._guess: asyncio.Task[str] | None = None
        self._ahead: tuple[asyncio.Task[None], Outbox] | None = None  # the answer started on the guess
        self._partial: asyncio.Task[None] | None = None
        self._partial_at = 0  # samples of the turn when the last partial transcript started
        self._hypothesis: list[str] = []  # the last partial transcript's words
        self._said: list[str] = []  # the words sent as deltas

    # -- sending ---------------------------------------------------------------------------------

    async def send(self, kind: str, **fields: Any) -> None:
        async with self._send_lock:
            await self.send_event({"type": kind, "event_id": _id("event"), **fields})

    async def _send_quietly(self, kind: str, **fields: Any) -> None:
        """Send from a background task: a client that is gone ends nothing but this send."""
        with contextlib.suppress(ClientGone):
            await self.send(kind, **fields)

    async def error(self, message: str, *, code: str = "invalid_request_error", param: str | None = None) -> None:
        await self.send(
            "error", error={"type": "invalid_request_error", "code": code, "message": message, "param": param}
        )

    def describe(self) -> dict[str, Any]:
        assert self.voice is not None  # noqa: S101 - set in __post_init__
        return {
            "id": self.id,
            "object": "realtime.session",
            "model": self.model,
            "modalities": ["audio", "text"],
            "instructions": self.instructions,
            "voice": self.voice.id,
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "input_audio_transcription": {
                "model": self._recognizer_id(),
                "language": self.language,
                "partial_results": self.partial_results,
            },
            "turn_detection": (
                {
                    "type": "server_vad",
                    "threshold": self.threshold,
                    "prefix_padding_ms": self.padding_ms,
                    "silence_duration_ms": self.silence_ms,
                }
                if self.server_vad
                else None
            ),
            "temperature": self.temperature,
            "max_response_output_tokens": self.max_tokens,
            "sample_rate": RATE,
            "session_id": self.stored.session.id if self.stored is not None else None,  # Moltbot's: where turns go
        }

    def _recognizer_id(self) -> str | None:
        try:
            return self.speech.recognizer(self.transcription_model, self.language).id
        except SpeechError:
            return None  # none installed: each turn says so

    async def start(self) -> None:
        await self.send("session.created", session=self.describe())

    # -- client events ---------------------------------------------------------------------------

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        handlers = {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self._item_create,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }
        handler = handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            await self.error(f"unknown event type {str(kind)[:64]!r}", code="unknown_event", param="type")
            return
        await handler(event)

    async def _session_update(self, event: dict[str, Any]) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            await self.error("session.update needs a `session` object", param="session")
            return
        try:
            self._apply(session)
        except (ValueError, SpeechError) as exc:
            await self.error(str(exc), param=getattr(exc, "param", None) or "session")
            return
        await self.send("session.updated", session=self.describe())

    def _apply(self, session: dict[str, Any]) -> None:
        if "instructions" in session:
            text = session["instructions"]
            if not isinstance(text, str) or len(text) > self.limits.max_instructions_chars:
                raise ValueError(
                    f"instructions must be text of at most {self.limits.max_instructions_chars} characters"
                )
            self.instructions = text
        if "voice" in session:
            if not isinstance(session["voice"], str):
                raise ValueError("voice must be a string")
            self.voice = self.speech.voice(None, session["voice"])
        if "temperature" in session:
            value = session["temperature"]
            if not isinstance(value, int | float) or not 0 <= value <= 2:
                raise ValueError("temperature must be between 0 and 2")
            self.temperature = float(value)
        if "max_response_output_tokens" in session:
            value = session["max_response_output_tokens"]
            limit = self.limits.max_response_tokens
            if value == "inf":
                value = limit
            if not isinstance(value, int) or not 1 <= value <= limit:
                raise ValueError(f"max_response_output_tokens must be 1 to {limit} (or 'inf')")
            self.max_tokens = value
        if "input_audio_transcription" in session:
            self._apply_transcription(session["input_audio_transcription"] or {})
        for name in ("input_audio_format", "output_audio_format"):
            if name in session and session[name] != "pcm16":
                raise ValueError(f"{name} must be pcm16 (16 kHz, mono, little-endian)")
        if "turn_detection" in session:
            detection = session["turn_detection"]
            if detection is None:
                self.server_vad = False
            elif isinstance(detection, dict) and detection.get("type", "server_vad") == "server_vad":
                silence = detection.get("silence_duration_ms", self.silence_ms)
                padding = detection.get("prefix_padding_ms", self.padding_ms)
                threshold = detection.get("threshold", self.threshold)
                if not isinstance(silence, int) or not 100 <= silence <= 5000:
                    raise ValueError("turn_detection.silence_duration_ms must be 100 to 5000")
                if not isinstance(padding, int) or not 0 <= padding <= 2000:
                    raise ValueError("turn_detection.prefix_padding_ms must be 0 to 2000")
                if not isinstance(threshold, int | float) or not 0.1 <= threshold <= 0.95:
                    raise ValueError("turn_detection.threshold must be 0.1 to 0.95")
                self.server_vad, self.silence_ms, self.padding_ms = True, silence, padding
                self.threshold = float(threshold)
                self.vad = StreamingVad(self.threshold, self.silence_ms)
            else:
                raise ValueError("turn_detection must be null or {type: server_vad, ...}")

    def _apply_transcription(self, transcription: Any) -> None:
        if not isinstance(transcription, dict):
            raise ValueError("input_audio_transcription must be null or {model, language, partial_results}")
        partial = transcription.get("partial_results", False)
        model, language = transcription.get("model"), transcription.get("language") or None
        if not isinstance(partial, bool):
            raise ValueError("input_audio_transcription.partial_results must be true or false")
        if not isinstance(model, str | None) or not isinstance(language, str | None) or len(language or "") > 8:
            raise ValueError("input_audio_transcription.model and .language must be short strings")
        self.speech.recognizer(model, language)  # a model that is not installed: SpeechError
        self.partial_results, self.transcription_model, self.language = partial, model, language

    async def _append(self, event: dict[str, Any]) -> None:
        encoded = event.get("audio")
        try:
            raw = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else b""
        except (binascii.Error, ValueError):
            raw = b""
        if not raw or len(raw) % 2:
            await self.error("audio must be base64 of 16-bit PCM samples", code="invalid_audio", param="audio")
            return
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        if not self.server_vad:  # the client decides the turn (push to talk)
            self._item = self._item or _id("item")
            self._keep(samples)
            self._partial_ahead()
            return
        padding = int(self.padding_ms * RATE / 1000)
        if not self.vad.speaking:
            self._lookback = np.concatenate([self._lookback, samples])[-padding - len(samples) :]
        else:
            self._keep(samples)
        for change in self.vad.feed(samples):
            at_ms = round(change.sample * 1000 / RATE)
            if change.kind == "speech_started":
                self._item = _id("item")
                self._audio, self._buffered = [self._lookback[-padding - len(samples) :]], 0
                self._drop_partial()
                await self.send("input_audio_buffer.speech_started", audio_start_ms=at_ms, item_id=self._item)
                await self._barge_in()  # the client stops playing at speech_started; the answer stops here
            else:
                self.timing = Timing(speech_stopped=time.monotonic())
                await self.send("input_audio_buffer.speech_stopped", audio_end_ms=at_ms, item_id=self._item)
                await self._turn_start(respond=True)
        if self.vad.speaking:
            self._guess_ahead()
            self._partial_ahead()
        if self.vad.speaking and self._buffered > self.limits.max_utterance_seconds * RATE:
            self.vad.reset()
            await self._turn_start(respond=True)  # a monologue past the limit is answered as it is

    def _guess_ahead(self) -> None:
        """Transcribe the turn at the speaker's first pause; forget that guess when speech goes on."""
        quiet = self.vad.quiet_ms
        if quiet == 0 and self._guess is not None:
            self._drop_guess()  # they went on speaking: the guess misses the rest
        elif quiet >= min(GUESS_AFTER_MS, self.silence_ms // 2) and self._guess is None and self._audio:
            self._guess = asyncio.create_task(self._transcribe(np.concatenate(self._audio)))
            outbox = Outbox(self, held=True)
            self._ahead = (asyncio.create_task(self._answer_ahead(self._guess, outbox)), outbox)

    def _partial_ahead(self) -> None:
        """A partial transcript of the turn so far, each PARTIAL_EVERY_S of speech, while the speaker talks."""
        due = self._buffered - self._partial_at >= PARTIAL_EVERY_S * RATE
        if not self.partial_results or not due or self.vad.quiet_ms or self._guess is not None or not self._audio:
            return
        if self._partial is None or self._partial.done():
            self._partial_at = self._buffered
            self._partial = asyncio.create_task(self._partial_run(self._item, np.concatenate(self._audio)))

    async def _partial_run(self, item: str | None, audio: np.ndarray) -> None:
        try:
            words = (await self._transcribe(audio)).split()
        except SpeechError:
            return
        new = agreed_words(self._said, self._hypothesis, words)
        self._hypothesis = words
        if new and item == self._item:
            delta = (" " if self._said else "") + " ".join(new)
            self._said += new
            await self._send_quietly(
                "conversation.item.input_audio_transcription.delta", item_id=item, content_index=0, delta=delta
            )

    def _drop_partial(self) -> None:
        if self._partial is not None:
            self._partial.cancel()
        self._partial, self._partial_at, self._hypothesis, self._said = None, 0, [], []

    def _drop_guess(self) -> None:
        if self._guess is not None:
            self._guess.cancel()
        if self._ahead is not None:
            self._ahead[0].cancel()
        self._guess, self._ahead = None, None

    async def _answer_ahead(self, guess: asyncio.Task[str], outbox: Outbox) -> None:
        """The answer to the guessed turn, made while the VAD still waits (its events held)."""
        text = await guess
        if text.strip():
            await self._respond(outbox, [*self._messages(), ChatMessage(Role.USER, text)])

    def _keep(self, samples: np.ndarray) -> None:
        self._audio.append(samples)
        self._buffered += len(samples)

    async def _commit(self, _: dict[str, Any]) -> None:
        if not self._audio:
            await self.error("the input audio buffer is empty", code="input_audio_buffer_commit_empty")
            return
        self._item = self._item or _id("item")
        await self._turn_start(respond=False)

    async def _clear(self, _: dict[str, Any]) -> None:
        self._audio, self._buffered, self._item = [], 0, None
        self._drop_guess()
        self._drop_partial()
        self.vad.reset()
        await self.send("input_audio_buffer.cleared")

    async def _item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        content = item.get("content") if isinstance(item, dict) else None
        texts = [
            c.get("text") for c in content or [] if isinstance(c, dict) and c.get("type") in ("input_text", "text")
        ]
        if (
            not isinstance(item, dict)
            or item.get("role", "user") != "user"
            or not texts
            or not all(isinstance(t, str) for t in texts)
        ):
            await self.error("conversation.item.create takes a user message with input_text content", param="item")
            return
        text = "\n".join(t for t in texts if isinstance(t, str))
        await self._user_said(text)
        item_id = item.get("id") if isinstance(item.get("id"), str) else _id("item")
        await self.send("conversation.item.created", item={"id": item_id, "type": "message", "role": "user"})

    async def _response_create(self, _: dict[str, Any]) -> None:
        await self._barge_in()
        self._response = asyncio.create_task(self._respond_after_turn(self._turn))

    async def _respond_after_turn(self, turn: asyncio.Task[None] | None) -> None:
        """A response asked for right after a commit answers the committed turn: its transcript first."""
        if turn is not None and not turn.done():
            await asyncio.wait({turn})  # (not gather: cancelling this response must not cancel the turn)
        await self._respond(Outbox(self, held=False), self._messages())

    async def _response_cancel(self, _: dict[str, Any]) -> None:
        await self._barge_in()

    # -- turns -----------------------------------------------------------------------------------

    async def _barge_in(self) -> None:
        """Stop the answer being made or spoken (its task sends response.done: cancelled)."""
        task, self._response = self._response, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _turn_start(self, *, respond: bool) -> None:
        audio = np.concatenate(self._audio) if self._audio else np.zeros(0, dtype=np.float32)
        item = self._item or _id("item")
        self._audio, self._buffered, self._item = [], 0, None
        self._drop_partial()
        await self.send("input_audio_buffer.committed", item_id=item)
        guess, ahead = (self._guess, self._ahead) if respond else (None, None)
        if respond:
            self._guess, self._ahead = None, None
        else:
            self._drop_guess()
        self._turn = asyncio.create_task(self._turn_run(audio, item, respond, guess, ahead))

    async def _turn_run(
        self,
        audio: np.ndarray,
        item: str,
        respond: bool,
        guess: asyncio.Task[str] | None,
        ahead: tuple[asyncio.Task[None], Outbox] | None,
    ) -> None:
        with contextlib.suppress(ClientGone):  # the connection closes; nothing to say to anyone
            await self._turn_body(audio, item, respond, guess, ahead)

    async def _turn_body(
        self,
        audio: np.ndarray,
        item: str,
        respond: bool,
        guess: asyncio.Task[str] | None,
        ahead: tuple[asyncio.Task[None], Outbox] | None,
    ) -> None:
        try:
            # The guess started at the pause that ended the turn: no speech came after it.
            text = await guess if guess is not None else await self._transcribe(audio)
        except asyncio.CancelledError:
            for task in (guess, ahead[0] if ahead else None):
                if task is not None and not task.done():
                    task.cancel()
            raise
        except SpeechError as exc:
            if ahead is not None:
                ahead[0].cancel()
            await self.error(str(exc), code="transcription_failed")
            return
        self.timing.transcribed = time.monotonic()
        await self.send(
            "conversation.item.input_audio_transcription.completed", item_id=item, content_index=0, transcript=text
        )
        if not text.strip():
            return  # a cough, a door: nothing to answer
        await self._user_said(text)
        if respond:
            await self._barge_in()
            if ahead is not None:
                task, outbox = ahead
                await outbox.release()  # what was made while the VAD waited goes out now
                self._response = task
            else:
                self._response = asyncio.create_task(self._respond(Outbox(self, held=False), self._messages()))

    def _messages(self) -> list[ChatMessage]:
        return [ChatMessage(Role.SYSTEM, self.instructions), *self.history]

    async def _transcribe(self, audio: np.ndarray) -> str:
        if not len(audio):
            return ""
        return await self.speech.listen(audio, self.transcription_model, self.language)

    async def _user_said(self, text: str) -> None:
        self._remember(ChatMessage(Role.USER, text))
        if self.stored is not None:
            await asyncio.to_thread(self.stored.add, "user", text)

    def _answered(self, text: str, status: str) -> None:
        """The answer joins the conversation (an answer made ahead: once its turn is confirmed)."""
        self._remember(ChatMessage(Role.ASSISTANT, text))
        if self.stored is not None:
            try:  # on the event loop: a cancelled task cannot await any more; one small write
                self.stored.add("assistant", text, "complete" if status == "completed" else "interrupted")
            except Exception:
                log.exception("could not store a live answer")

    def _remember(self, message: ChatMessage) -> None:
        self.history.append(message)
        del self.history[: max(0, len(self.history) - self.limits.max_history)]

    async def _respond(self, outbox: Outbox, messages: list[ChatMessage]) -> None:
        response_id, item_id = _id("resp"), _id("item")
        await outbox.send(
            "response.created", response={"id": response_id, "object": "realtime.response", "status": "in_progress"}
        )
        said: list[str] = []
        status = "completed"
        audio_seconds = 0.0
        try:
            request = ChatRequest(
                model=self.model,
                messages=messages,
                sampling=Sampling(max_tokens=self.max_tokens, temperature=self.temperature),
            )
            stream = await self.generation.chat_stream(request)
            pending = ""
            async for event in stream:
                if not isinstance(event, TextDelta) or not event.text:
                    continue
                if not said and outbox.confirmed:
                    self.timing.first_text = time.monotonic()
                said.append(event.text)
                await outbox.send(
                    "response.audio_transcript.delta", response_id=response_id, item_id=item_id, delta=event.text
                )
                pending += event.text
                clause, pending = split_clause(pending, first=not audio_seconds)
                if clause:
                    audio_seconds += await self._speak(clause, response_id, item_id, outbox)
            if pending.strip():
                audio_seconds += await self._speak(pending.strip(), response_id, item_id, outbox)
            await outbox.send("response.audio.done", response_id=response_id, item_id=item_id)
            await outbox.send(
                "response.audio_transcript.done", response_id=response_id, item_id=item_id, transcript="".join(said)
            )
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        except ClientGone:
            status = "failed"
        except Exception as exc:  # noqa: BLE001 - the turn fails, the conversation goes on
            status = "failed"
            with contextlib.suppress(ClientGone):
                await self.error(str(exc) or type(exc).__name__, code="response_failed")
        finally:
            text = "".join(said).strip()
            if text:
                outbox.when_confirmed(lambda: self._answered(text, status))
            done = {
                "id": response_id,
                "object": "realtime.response",
                "status": status,
                "output": [
                    {
                        "id": item_id,
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "audio", "transcript": text}],
                    }
                ],
                "usage": {"output_audio_seconds": round(audio_seconds, 3)},
                "timing": self.timing.since_stop(),  # Moltbot's own: where the turn's time went
            }
            with contextlib.suppress(ClientGone):
                await asyncio.shield(outbox.send("response.done", response=done))

    async def _speak(self, clause: str, response_id: str, item_id: str, outbox: Outbox) -> float:
        """One clause spoken and sent; its seconds of audio."""
        assert self.voice is not None  # noqa: S101 - set in __post_init__
        seconds = 0.0
        async for samples in self.speech.sentences(self.voice, clause, 1.0):
            chunk = pcm16(resample(samples, self.voice.rate, RATE))
            if not self.timing.first_audio and outbox.confirmed:
                self.timing.first_audio = time.monotonic()
            seconds += len(samples) / self.voice.rate
            await outbox.send(
                "response.audio.delta",
                response_id=response_id,
                item_id=item_id,
                delta=base64.b64encode(chunk).decode("ascii"),
            )
        return seconds

    async def close(self) -> None:
        await self._barge_in()
        self._drop_partial()
        pending = [t for t in (self._guess, self._ahead[0] if self._ahead else None) if t is not None]
        self._drop_guess()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._turn is not None and not self._turn.done():
            self._turn.cancel()
            await asyncio.gather(self._turn, return_exceptions=True)
