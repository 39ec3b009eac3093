"""What every log record goes through before it is written: secrets taken out.

Libraries log what they receive at DEBUG: the WebSocket library logs every handshake header, among them
`Authorization: Bearer <key>` and the `openai-insecure-api-key.<key>` subprotocol a browser sends. The
filter on the server's handler masks API keys (our `mb_<id>_<secret>`: the id stays, it is public), bearer
and basic credentials, `x-api-key` values and that subprotocol, in the message and in string fields.
"""

from __future__ import annotations

import logging
import re

_MASK = "***"
_PATTERNS = (
    re.compile(r"(openai-insecure-api-key\.)[^\s,;\"']+"),
    re.compile(r"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=\-]+"),
    re.compile(r"(?i)(\bx-api-key[\"']?\s*[:=,]\s*[\"']?)[^\s,;\"']+"),
    re.compile(r"(mb_[0-9a-f]{12}_)[A-Za-z0-9_\-]+"),  # a key anywhere else: its public id is kept
)


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + _MASK, text)
    return text


class RedactSecrets(logging.Filter):
    """Masks credentials in a record's message, arguments and extra string fields (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record whose arguments do not fit its format is kept as is
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        for name, value in list(vars(record).items()):
            if isinstance(value, str) and name not in ("msg", "name", "levelname", "pathname", "filename", "module"):
                cleaned = redact(value)
                if cleaned != value:
                    setattr(record, name, cleaned)
        return True
