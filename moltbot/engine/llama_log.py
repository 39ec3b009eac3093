"""llama.cpp's own log lines, routed into Python logging.

llama-cpp-python's `verbose=False` hides llama.cpp's prints by pointing file descriptors 1 and 2 at
/dev/null while a model or context is made. That is process-wide: every line the server logs from another
thread in that window (access log, audit, errors) was lost. So models are made with `verbose=True` and
llama.cpp's messages come here instead, one record per line: warnings and errors at their level on the
`moltbot.engine.llama_cpp` logger, the rest at DEBUG.
"""

from __future__ import annotations

import ctypes
import logging
import threading

import llama_cpp

log = logging.getLogger("moltbot.engine.llama_cpp")

# ggml.h: enum ggml_log_level
_NONE, _DEBUG, _INFO, _WARN, _ERROR, _CONT = range(6)
_LEVELS = {_NONE: logging.DEBUG, _DEBUG: logging.DEBUG, _INFO: logging.DEBUG, _WARN: logging.WARNING}
_MAX_LINE = 4096


class _Lines:
    """Pieces of text joined into lines; a line is logged at the level of its first piece."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._text = ""
        self._level = logging.DEBUG

    def feed(self, level: int, text: str) -> None:
        with self._lock:
            if level != _CONT and not self._text:
                self._level = _LEVELS.get(level, logging.ERROR)
            self._text += text
            *lines, rest = self._text.split("\n")
            if len(rest) > _MAX_LINE:
                lines.append(rest)
                rest = ""
            self._text = rest
            level_now = self._level
        for line in lines:
            if line.strip() and log.isEnabledFor(level_now):
                log.log(level_now, "%s", line.rstrip())


_lines = _Lines()


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    try:
        _lines.feed(level, text.decode("utf-8", errors="replace"))
    except Exception:  # noqa: BLE001 - an exception must not cross back into C
        return


def install() -> None:
    """Send llama.cpp's log to Python logging (called before each model is made; cheap to repeat)."""
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
