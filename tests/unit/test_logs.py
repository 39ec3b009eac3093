"""Secrets masked in log records: keys, bearer and basic credentials, x-api-key, the browser subprotocol."""

from __future__ import annotations

import logging

from moltbot.logs import RedactSecrets, redact

KEY = "mb_3e8078423a66_Y4UfEja99WDqAitVEGJVdwmZnJSZvRHe8s-mHk051-o"


def test_credentials_are_masked_and_the_rest_kept() -> None:
    assert redact(f"< sec-websocket-protocol: realtime, openai-insecure-api-key.{KEY}") == (
        "< sec-websocket-protocol: realtime, openai-insecure-api-key.***"
    )
    assert redact(f"< authorization: Bearer {KEY}") == "< authorization: Bearer ***"
    assert redact("Authorization: Basic dXNlcjpwYXNz") == "Authorization: Basic ***"
    assert redact("x-api-key: sk-ant-secret") == "x-api-key: ***"
    assert redact(f"key {KEY} used") == "key mb_3e8078423a66_*** used"  # the id is public, the secret is not
    assert redact("GET /v1/models 200") == "GET /v1/models 200"


def test_the_filter_cleans_messages_arguments_and_fields() -> None:
    record = logging.LogRecord(
        "websockets", logging.DEBUG, __file__, 1, "< %s: %s", ("authorization", f"Bearer {KEY}"), None
    )
    record.header = f"openai-insecure-api-key.{KEY}"
    assert RedactSecrets().filter(record)
    assert record.getMessage() == "< authorization: Bearer ***"
    assert record.header == "openai-insecure-api-key.***"
    assert KEY[16:] not in record.getMessage()
