"""GBNF grammars that constrain output to JSON, or to a JSON schema (llama.cpp's converter)."""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from moltbot.engine.errors import InvalidGrammarError

JSON_OBJECT_GRAMMAR = JSON_GBNF


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """A grammar whose every sentence is JSON valid against `schema`; raises InvalidGrammarError."""
    if not schema:
        return JSON_OBJECT_GRAMMAR
    try:
        return str(json_schema_to_gbnf(json.dumps(schema)))
    except (ValueError, KeyError, TypeError, RecursionError, NotImplementedError) as exc:
        raise InvalidGrammarError(f"unsupported JSON schema: {exc}", param="response_format") from exc
