"""`moltbot pipeline ...`: preprocessing pipelines on local files, no server needed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from moltbot.errors import InvalidRequestError
from moltbot.pipelines import PRESETS, Document, Pipeline, default_registry, parse_definition_text

Table = Callable[[Sequence[Sequence[object]]], str]
_MAX_INPUT_BYTES = 64 << 20


def _out(text: str) -> None:
    print(text)  # noqa: T201


def _err(text: str) -> None:
    print(text, file=sys.stderr)  # noqa: T201


def _pipeline(spec: str) -> Pipeline:
    """A shipped pipeline's name, or a YAML/JSON definition file."""
    if spec in PRESETS:
        return default_registry().build(PRESETS[spec])
    path = Path(spec)
    if not path.is_file():
        raise InvalidRequestError(f"{spec}: neither a shipped pipeline ({', '.join(sorted(PRESETS))}) nor a file")
    return default_registry().build(parse_definition_text(path.read_text(encoding="utf-8")))


def _where(exc: InvalidRequestError) -> str:
    return f" ({exc.param})" if exc.param else ""


def cmd_steps(args: argparse.Namespace, table: Table) -> int:
    registry = default_registry()
    if args.json:
        _out(json.dumps([info.to_json() for info in registry.describe()], indent=1))
        return 0
    rows: list[list[object]] = [["STEP", "SOURCE", "OPTIONS", "WHAT IT DOES"]]
    for info in registry.describe():
        rows.append([info.name, info.source, ",".join(info.options_schema.get("properties", {})), info.summary])
    _out(table(rows))
    for name, why in sorted(registry.broken.items()):
        _err(f"not available: {name}: {why}")
    return 0


def _checked(spec: str) -> Pipeline | None:
    try:
        return _pipeline(spec)
    except InvalidRequestError as exc:
        _err(f"invalid{_where(exc)}: {exc.message}")
        return None


def cmd_validate(args: argparse.Namespace, _table: Table) -> int:
    pipeline = _checked(args.pipeline)
    if pipeline is None:
        return 1
    _out(json.dumps({"valid": True, **pipeline.describe()}, indent=1, ensure_ascii=False))
    return 0


def cmd_run(args: argparse.Namespace, _table: Table) -> int:
    pipeline = _checked(args.pipeline)
    if pipeline is None:
        return 1
    source = sys.stdin.buffer if args.input == "-" else Path(args.input).open("rb")  # noqa: SIM115
    with source:
        data = source.read(_MAX_INPUT_BYTES + 1)
    if len(data) > _MAX_INPUT_BYTES:
        _err(f"the input is larger than {_MAX_INPUT_BYTES >> 20} MiB")
        return 1
    text = data.decode("utf-8", errors="replace")
    # Pages as pdftotext writes them: separated by form feeds.
    document = Document.from_pages(text.rstrip("\f").split("\f")) if args.pages else Document.from_text(text)
    try:
        document, reports = pipeline.run(document)
    except InvalidRequestError as exc:
        _err(f"failed{_where(exc)}: {exc.message}")
        return 1
    result: dict[str, Any] = {"pipeline": pipeline.name, "document": document.to_json()}
    result["report"] = [r.to_json() for r in reports]
    if args.chunks:
        for chunk in document.chunks:
            _out(json.dumps(chunk.to_json(), ensure_ascii=False))
    else:
        _out(json.dumps(result, indent=1, ensure_ascii=False))
    for report in reports:
        _err(f"{report.step:<24} {report.seconds * 1000:9.1f} ms  {report.chars_in:>9} -> {report.chars_out:<9} chars")
    return 0


def add_parser(sub: Any, table: Table) -> None:
    pipeline = sub.add_parser("pipeline", help="preprocessing pipelines over local text").add_subparsers(
        dest="action", required=True
    )
    steps = pipeline.add_parser("steps", help="the steps there are (built-in and plugins) and their options")
    steps.add_argument("--json", action="store_true", help="with each step's options as JSON Schema")
    steps.set_defaults(func=lambda args: cmd_steps(args, table))
    validate = pipeline.add_parser("validate", help="check a pipeline definition (YAML or JSON)")
    validate.add_argument("pipeline", help="a definition file, or a shipped pipeline's name")
    validate.set_defaults(func=lambda args: cmd_validate(args, table))
    run = pipeline.add_parser("run", help="run a pipeline over a text file; the result is JSON on stdout")
    run.add_argument("pipeline", help="a definition file, or a shipped pipeline's name")
    run.add_argument("input", nargs="?", default="-", help="a UTF-8 text file (default: stdin)")
    run.add_argument("--pages", action="store_true", help="the input's pages are separated by form feeds")
    run.add_argument("--chunks", action="store_true", help="print only the chunks, one JSON object per line")
    run.set_defaults(func=lambda args: cmd_run(args, table))
