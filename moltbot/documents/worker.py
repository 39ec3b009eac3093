"""The document worker: a subprocess that opens an untrusted file and extracts its pages' text.

    python -m moltbot.documents.worker

stdin: one JSON line (the request), then `size` bytes of the file. stdout: one JSON line per answer.
The request's `op` is `probe` (the file's type and page count) or `extract` (`pages`, each answered as
a PageText as soon as it is read). The worker limits its own address space and CPU time first
(`memory_bytes`, `cpu_seconds`), so a decompression bomb or a pathological PDF ends this process, not
the server; the parent (runner.py) also bounds each page's wall time.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from typing import Any

# Tesseract's OpenMP threads: one page at a time is faster on few cores than threads contending.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")


def _limit(memory_bytes: int, cpu_seconds: int) -> None:
    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if cpu_seconds > 0:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def main() -> int:
    header = sys.stdin.buffer.readline(65536)
    try:
        request = json.loads(header)
        size = int(request["size"])
    except (ValueError, KeyError, TypeError):
        _say({"error": "malformed worker request"})
        return 2
    _limit(int(request.get("memory_bytes", 0)), int(request.get("cpu_seconds", 0)))
    data = sys.stdin.buffer.read(size)
    if len(data) != size:
        _say({"error": "the file was cut short"})
        return 2

    from moltbot.documents.extract import ExtractionError, Ocr, Source, extract, sniff

    media_type = sniff(data)
    if media_type is None:
        _say({"error": "not a supported file: PDF, PNG, JPEG, TIFF, WebP, BMP or UTF-8 text"})
        return 0
    try:
        source = Source(data, media_type)
    except ExtractionError as exc:
        _say({"error": str(exc), "media_type": media_type})
        return 0
    except MemoryError:
        _say({"error": "the file needs more memory than a document may use"})
        return 0
    if request["op"] == "probe":
        _say({"media_type": media_type, "pages": source.pages})
        return 0
    pages = [int(p) for p in request.get("pages", []) if 1 <= int(p) <= source.pages]
    ocr = None
    if source.media_type != "text/plain":
        try:
            ocr = Ocr(str(request.get("languages", "eng")))
        except ExtractionError as exc:
            _say({"error": str(exc)})
            return 0
    dpi = int(request.get("dpi", 300))
    min_chars = int(request.get("min_text_chars", 32))
    for result in extract(source, pages, ocr, dpi, min_chars):
        _say(result.to_json())
    if ocr is not None:
        ocr.close()
    source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
