"""GBNF grammars that constrain output to JSON, or to a JSON schema (llama.cpp's converter).

Whitespace is bounded everywhere (as llama.cpp's own json.gbnf bounds it) and nothing may follow the
top-level value: once the object closes, only the end of generation is allowed, so a model cannot pad
a JSON answer with whitespace up to `max_tokens`. A schema is checked against its meta-schema, and
bounded in size and depth, before llama.cpp's converter sees it: the converter asserts on schemas it
does not expect, and any exception of it becomes InvalidGrammarError (a 400), never a 500.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from llama_cpp.llama_grammar import json_schema_to_gbnf

from moltbot.engine.errors import InvalidGrammarError

MAX_SCHEMA_BYTES = 64 << 10
MAX_SCHEMA_DEPTH = 32
_PARAM = "response_format.json_schema.schema"

# Any JSON object; whitespace only where JSON allows it and at most a newline and 20 blanks at a time.
JSON_OBJECT_GRAMMAR = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null")
object ::= "{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"
array  ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""
number ::= "-"? ( [0-9] | [1-9] [0-9]{0,15} ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]{1,4} )?
ws     ::= | " " | "\n" [ \t]{0,20}
"""


def _depth(value: Any) -> int:
    """The nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def check_schema(schema: dict[str, Any], param: str = _PARAM) -> None:
    """Raise InvalidGrammarError naming what is wrong with a client's JSON schema."""
    if len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
        raise InvalidGrammarError(f"the JSON schema is larger than {MAX_SCHEMA_BYTES} bytes", param=param)
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise InvalidGrammarError(f"the JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels", param=param)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        at = f" at '{where}'" if where else ""
        raise InvalidGrammarError(f"the JSON schema is not valid{at}: {exc.message}", param=param) from None


def json_schema_grammar(schema: dict[str, Any], param: str = _PARAM) -> str:
    """A grammar whose every sentence is JSON valid against `schema`; raises InvalidGrammarError."""
    if not schema:
        return JSON_OBJECT_GRAMMAR
    check_schema(schema, param)
    try:
        return str(json_schema_to_gbnf(json.dumps(schema)))
    except RecursionError:
        raise InvalidGrammarError("the JSON schema refers to itself too deeply", param=param) from None
    except Exception as exc:  # noqa: BLE001 - the converter asserts and raises anything on schemas it does not expect
        reason = str(exc) or type(exc).__name__
        raise InvalidGrammarError(f"the JSON schema cannot be enforced: {reason}", param=param) from None
