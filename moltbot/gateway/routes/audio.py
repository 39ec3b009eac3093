"""OpenAI's audio routes (scope `audio`): POST /v1/audio/transcriptions and /v1/audio/translations
(multipart: `file`, `model`, `language`, `prompt`, `temperature`, `response_format`,
`timestamp_granularities[]`, `stream`), POST /v1/audio/speech (JSON), and GET /v1/audio/voices
(Moltbot's own: the voices installed). The work is SpeechService's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from moltbot.gateway.deps import Speech
from moltbot.gateway.errors import APIError
from moltbot.gateway.schemas import SpeechRequest
from moltbot.gateway.sse import event_stream, sse
from moltbot.services.speech import TRANSCRIPT_FORMATS, SpeechError, SpeechService, transcript_body
from moltbot.speech.audio import MEDIA_TYPES
from moltbot.speech.stt import TranscribeOptions

router = APIRouter()
MAX_PROMPT_CHARS = 2000


def _error(exc: SpeechError) -> APIError:
    return APIError(400, str(exc), param=exc.param, code=exc.code)


async def _recognize(
    speech: SpeechService,
    task: str,
    file: UploadFile,
    *,
    model: str | None,
    language: str | None,
    prompt: str | None,
    temperature: float,
    response_format: str,
    granularities: list[str] | None,
    stream: bool,
) -> Response:
    if response_format not in TRANSCRIPT_FORMATS:
        raise APIError(
            400,
            f"response_format must be one of {', '.join(TRANSCRIPT_FORMATS)}",
            param="response_format",
            code="invalid_value",
        )
    wanted = set(granularities or ["segment"])
    if not wanted <= {"word", "segment"}:
        raise APIError(400, "timestamp_granularities[] takes word and segment", param="timestamp_granularities")
    if "word" in wanted and response_format != "verbose_json":
        raise APIError(400, "word timestamps need response_format verbose_json", param="timestamp_granularities")
    if stream and response_format not in ("json", "text"):
        raise APIError(400, "stream=true gives text events: use response_format json or text", param="stream")
    limit = speech.limits.max_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise APIError(413, f"the file is larger than {limit} bytes", param="file", code="file_too_large")
    options = TranscribeOptions(
        language=language or None, prompt=prompt, temperature=temperature, task=task, words="word" in wanted
    )
    if stream:
        try:
            reading = await speech.read(data, model, options)
        except SpeechError as exc:
            raise _error(exc) from None

        async def events() -> AsyncIterator[bytes]:
            text = ""
            async for segment in reading.segments:
                delta = segment.text if text else segment.text.lstrip()
                text += delta
                yield sse({"type": "transcript.text.delta", "delta": delta})
            usage = {"type": "duration", "seconds": round(reading.duration, 3)}
            yield sse({"type": "transcript.text.done", "text": text.strip(), "usage": usage})

        return event_stream(events())
    try:
        result = await speech.transcribe(data, model, options)
    except SpeechError as exc:
        raise _error(exc) from None
    body = transcript_body(
        result, response_format, "translate" if task == "translate" else "transcribe", "word" in wanted
    )
    if isinstance(body, str):
        media = {"srt": "application/x-subrip", "vtt": "text/vtt"}.get(response_format, "text/plain")
        return PlainTextResponse(body, media_type=media)
    return JSONResponse(body)


FileField = Annotated[UploadFile, File(description="audio: wav, mp3, flac, ogg, webm, m4a, ...")]
ModelField = Annotated[str | None, Form(max_length=64)]
PromptField = Annotated[str | None, Form(max_length=MAX_PROMPT_CHARS)]
TemperatureField = Annotated[float, Form(ge=0.0, le=1.0)]
FormatField = Annotated[str, Form(max_length=16)]


@router.post("/v1/audio/transcriptions")
async def transcriptions(
    speech: Speech,
    file: FileField,
    *,
    model: ModelField = None,
    language: Annotated[str | None, Form(max_length=16, pattern=r"^[a-zA-Z]{2,3}(-[a-zA-Z]{2,4})?$")] = None,
    prompt: PromptField = None,
    temperature: TemperatureField = 0.0,
    response_format: FormatField = "json",
    timestamp_granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
    stream: Annotated[bool, Form()] = False,
) -> Response:
    return await _recognize(
        speech,
        "transcribe",
        file,
        model=model,
        language=language,
        prompt=prompt,
        temperature=temperature,
        response_format=response_format,
        granularities=timestamp_granularities,
        stream=stream,
    )


@router.post("/v1/audio/translations")
async def translations(
    speech: Speech,
    file: FileField,
    *,
    model: ModelField = None,
    prompt: PromptField = None,
    temperature: TemperatureField = 0.0,
    response_format: FormatField = "json",
) -> Response:
    """Speech in any language the model knows, written in English."""
    return await _recognize(
        speech,
        "translate",
        file,
        model=model,
        language=None,
        prompt=prompt,
        temperature=temperature,
        response_format=response_format,
        granularities=None,
        stream=False,
    )


@router.post("/v1/audio/speech")
async def create_speech(body: SpeechRequest, request: Request, speech: Speech) -> Response:
    if body.instructions:
        raise APIError(
            400, "instructions (a speaking style) cannot be followed by Piper or espeak-ng", param="instructions"
        )
    try:
        speech.check_speech(body.input, body.response_format, body.speed)
        voice = speech.voice(body.model, body.voice)
    except SpeechError as exc:
        raise _error(exc) from None
    if body.stream_format == "sse":

        async def events() -> AsyncIterator[bytes]:
            async for event in speech.speech_events(voice, body.input, body.speed, body.response_format):
                if await request.is_disconnected():
                    return
                yield sse(event)

        return event_stream(events())
    chunks = speech.speech(voice, body.input, body.speed, body.response_format)
    try:
        first = await anext(chunks)  # errors before the status line is sent are still a 400
    except SpeechError as exc:
        raise _error(exc) from None

    async def audio() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            if await request.is_disconnected():
                return
            yield chunk

    headers: dict[str, Any] = {"X-Voice": voice.id}
    return StreamingResponse(audio(), media_type=MEDIA_TYPES[body.response_format], headers=headers)


@router.get("/v1/audio/voices")
async def list_voices(speech: Speech) -> JSONResponse:
    voices = [v.to_json() for v in speech.speakers.voices()]
    return JSONResponse({"object": "list", "data": voices, "models": speech.recognizers.ids})
