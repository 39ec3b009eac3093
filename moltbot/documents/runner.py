"""The server's side of the document worker (worker.py): start it, feed it the file, read its answers,
and bound it. A page that takes longer than `page_timeout_s`, or that ends the worker (its memory or CPU
limit), is a failed page; a new worker goes on with the pages after it."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from moltbot.errors import InvalidRequestError


class DocumentRejectedError(InvalidRequestError):
    """An upload that is not a readable document (damaged, encrypted, too large, unsupported): a 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "file", code="invalid_document")


@dataclass(slots=True, frozen=True)
class WorkerLimits:
    memory_bytes: int = 1536 << 20
    cpu_seconds: int = 3600
    page_timeout_s: float = 180.0
    probe_timeout_s: float = 60.0


@dataclass(slots=True, frozen=True)
class Probe:
    media_type: str
    pages: int


def _start(request: dict[str, Any], data: bytes) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLTBOT_")}  # no secrets in the worker
    env["OMP_THREAD_LIMIT"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "moltbot.documents.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    assert process.stdin is not None  # noqa: S101 - PIPE
    try:
        process.stdin.write(json.dumps({**request, "size": len(data)}).encode() + b"\n")
        process.stdin.write(data)
        process.stdin.close()
    except BrokenPipeError:
        pass  # it died at once: its exit is read like any other
    return process


def _lines(
    process: subprocess.Popen[bytes], timeout_s: float, cancelled: threading.Event | None = None
) -> Generator[dict[str, Any] | None]:
    """The worker's answers; None when one did not come within `timeout_s` (the worker is then killed).
    A set `cancelled` kills the worker within half a second and ends the answers."""
    assert process.stdout is not None  # noqa: S101 - PIPE
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    buffer = b""
    try:
        while True:
            deadline = time.monotonic() + timeout_s
            while b"\n" not in buffer:
                left = deadline - time.monotonic()
                if cancelled is not None and cancelled.is_set():
                    return
                if left <= 0:
                    _kill(process)
                    yield None
                    return
                if not selector.select(min(left, 0.5)):
                    continue
                chunk = os.read(process.stdout.fileno(), 1 << 16)
                if not chunk:
                    process.wait()
                    return
                buffer += chunk
            line, buffer = buffer.split(b"\n", 1)
            try:
                yield json.loads(line)
            except ValueError:
                _kill(process)
                return
    finally:
        selector.close()
        _kill(process)


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def probe(data: bytes, limits: WorkerLimits) -> Probe:
    """The file's type and page count, read by a worker; raises DocumentRejectedError."""
    process = _start({"op": "probe", "memory_bytes": limits.memory_bytes, "cpu_seconds": 60}, data)
    for answer in _lines(process, limits.probe_timeout_s):
        if answer is None:
            raise DocumentRejectedError(f"the file could not be opened within {limits.probe_timeout_s:g} s")
        if "error" in answer:
            raise DocumentRejectedError(str(answer["error"]))
        return Probe(str(answer["media_type"]), int(answer["pages"]))
    raise DocumentRejectedError("the file could not be opened (it exceeded the memory or CPU limit)")


def extract(
    data: bytes,
    pages: list[int],
    *,
    languages: str,
    dpi: int,
    limits: WorkerLimits,
    cancelled: threading.Event | None = None,
) -> Iterator[dict[str, Any]]:
    """Each page's text as a worker reads it (a PageText's JSON); a page that fails is answered with
    `method` "none" and its `error`, and the pages after it go on in a new worker."""
    left = list(pages)
    while left:
        request = {
            "op": "extract",
            "pages": left,
            "languages": languages,
            "dpi": dpi,
            "memory_bytes": limits.memory_bytes,
            "cpu_seconds": limits.cpu_seconds,
        }
        process = _start(request, data)
        started = time.perf_counter()
        answers = _lines(process, limits.page_timeout_s, cancelled)
        try:
            for answer in answers:
                if cancelled is not None and cancelled.is_set():
                    return
                if answer is None:
                    yield _failed(left.pop(0), f"the page took longer than {limits.page_timeout_s:g} s", started)
                    break
                if "error" in answer and "page" not in answer:  # the whole file (or the OCR setup) failed
                    for number in left:
                        yield _failed(number, str(answer["error"]), started)
                    return
                if int(answer.get("page", -1)) != left[0]:
                    yield _failed(left.pop(0), "the worker answered out of order", started)
                    break
                left.pop(0)
                yield answer
                started = time.perf_counter()
            else:
                if cancelled is not None and cancelled.is_set():
                    return
                if left:  # the worker ended before its pages: the page under way took it down
                    yield _failed(left.pop(0), "the page exceeded the memory or CPU limit of a document", started)
        finally:
            answers.close()


def _failed(page: int, error: str, started: float) -> dict[str, Any]:
    return {
        "page": page,
        "method": "none",
        "text": "",
        "confidence": 0.0,
        "seconds": round(time.perf_counter() - started, 4),
        "error": error,
    }
