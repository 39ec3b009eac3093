"""Quality of the bundled instruct model as an assistant, Moltbot against llama.cpp's llama-server on the
same GGUF: tool calling (BFCL-style: simple, multiple, parallel, irrelevance), instruction following
(IFEval-style checkable constraints), structured output (JSON schemas under response_format).

    python bench/assistant_eval.py [--model qwen2.5-coder-1.5b-instruct] [--peer PATH] [--only tools,if,schema]

The peer is llama-server built by bench/build_llama_server.sh (default ~/.cache/moltbot/llama-server/),
run with --jinja; without it the peer column is skipped with a message. Each server runs alone, greedy
(temperature 0), 2 threads, a 4096-token context.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from common import prepare_data_dir  # first: it puts the repository on sys.path
from eval_cases import INSTRUCTION_CASES, SCHEMA_CASES, TOOL_CASES, ToolCase

from moltbot.models.bundled import QWEN_1_5B, install_bundled
from moltbot.models.store import ModelStore
from tests.helpers import free_port, running_server

SYSTEM = "You are a helpful assistant."
DEFAULT_PEER = Path.home() / ".cache" / "moltbot" / "llama-server" / "llama-server"


# -- scoring --------------------------------------------------------------------------------------


def _norm(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return round(float(value), 6)
    if isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def _matches(case: ToolCase, name: str, arguments: dict[str, Any], expected: dict[str, Any]) -> bool:
    """BFCL's AST check: every expected argument equal after normalisation; extra ones only if optional."""
    spec = next(t for t in case.tool_specs() if t["function"]["name"] == name)["function"]["parameters"]
    required = set(spec.get("required", []))
    if any(_norm(arguments.get(k)) != _norm(v) for k, v in expected.items()):
        return False
    return all(k in expected or (k not in required and k in spec["properties"]) for k in arguments)


def score_tools(case: ToolCase, reply: dict[str, Any]) -> dict[str, Any]:
    message = reply["choices"][0]["message"]
    calls = message.get("tool_calls") or []
    content = message.get("content") or ""
    leaked = "<tool_call>" in content or "</tool_call>" in content
    parsed: list[tuple[str, dict[str, Any]]] = []
    valid_json = True
    for call in calls:
        try:
            arguments = json.loads(call["function"]["arguments"])
        except (ValueError, TypeError):
            valid_json = False
            continue
        parsed.append((call["function"]["name"], arguments if isinstance(arguments, dict) else {}))
    remaining = list(case.expected)
    correct = len(parsed) == len(case.expected)
    for name, arguments in parsed:
        hit = next((e for e in remaining if e[0] == name and _matches(case, name, arguments, e[1])), None)
        if hit is None:
            correct = False
            break
        remaining.remove(hit)
    return {"correct": correct and not remaining, "valid_json": valid_json, "leak": leaked, "calls": len(calls)}


# -- servers --------------------------------------------------------------------------------------


@contextmanager
def peer_server(binary: Path, gguf: Path, log: Path) -> Iterator[str]:
    port = free_port()
    command = [str(binary), "-m", str(gguf), "--jinja", "--host", "127.0.0.1", "--port", str(port)]
    # --no-repack: llama.cpp's AMX kernels crash on Q4_K_M (ggml-org/llama.cpp#20824), and Moltbot's exact
    # mode runs without repacked weights too.
    command += ["-c", "4096", "-t", "2", "-np", "1", "--no-webui", "--no-repack"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        if process.poll() is not None:
            raise RuntimeError(f"llama-server exited with {process.returncode}: {log.read_text()[-2000:]}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_suite(client: httpx.Client, model: str, parts: set[str]) -> dict[str, Any]:
    results: dict[str, Any] = {"tools": [], "if": [], "schema": [], "seconds": 0.0}
    started = time.monotonic()
    chat = "/v1/chat/completions"
    base = {"model": model, "temperature": 0, "seed": 1}
    if "tools" in parts:
        for case in TOOL_CASES:
            body = {**base, "max_tokens": 160, "tools": case.tool_specs()}
            body["messages"] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": case.prompt}]
            reply = client.post(chat, json=body).raise_for_status().json()
            results["tools"].append((case.kind, score_tools(case, reply)))
    if "if" in parts:
        for instruction in INSTRUCTION_CASES:
            body = {**base, "max_tokens": 256, "messages": [{"role": "user", "content": instruction.prompt}]}
            text = client.post(chat, json=body).raise_for_status().json()["choices"][0]["message"]["content"] or ""
            results["if"].append(bool(instruction.check(text)))
    if "schema" in parts:
        for prompt, schema in SCHEMA_CASES:
            body = {**base, "max_tokens": 300, "messages": [{"role": "user", "content": f"Make up: {prompt}"}]}
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
            text = client.post(chat, json=body).raise_for_status().json()["choices"][0]["message"]["content"] or ""
            try:
                jsonschema.validate(json.loads(text), schema)
                results["schema"].append(True)
            except (ValueError, jsonschema.ValidationError):
                results["schema"].append(False)
    results["seconds"] = time.monotonic() - started
    return results


# -- report ---------------------------------------------------------------------------------------


def _rate(values: list[bool]) -> str:
    return f"{sum(values)}/{len(values)} ({100 * sum(values) / len(values):.0f}%)" if values else "-"


def report(columns: dict[str, dict[str, Any]]) -> None:
    names = list(columns)
    rows: list[tuple[str, list[str]]] = []
    for kind in ("simple", "multiple", "parallel", "irrelevance", None):
        label = f"tool calls: {kind}" if kind else "tool calls: all"
        rows.append(
            (label, [_rate([s["correct"] for k, s in c["tools"] if kind in (None, k)]) for c in columns.values()])
        )
    rows.append(
        ("tool arguments valid JSON", [_rate([s["valid_json"] for _, s in c["tools"]]) for c in columns.values()])
    )
    rows.append(
        ("raw markup leaked into content", [_rate([s["leak"] for _, s in c["tools"]]) for c in columns.values()])
    )
    rows.append(("instruction following", [_rate(c["if"]) for c in columns.values()]))
    rows.append(("JSON schema valid (response_format)", [_rate(c["schema"]) for c in columns.values()]))
    rows.append(("seconds", [f"{c['seconds']:.0f}" for c in columns.values()]))
    print("| metric | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, values in rows:
        print(f"| {label} | " + " | ".join(values) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=QWEN_1_5B)
    parser.add_argument("--peer", type=Path, default=Path(os.environ.get("MOLTBOT_PEER", DEFAULT_PEER)))
    parser.add_argument("--only", default="tools,if,schema")
    parser.add_argument("--servers", default="moltbot,llama-server", help="the columns to measure")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "assistant_eval.json")
    parser.add_argument("--load", type=Path, help="columns measured before (an --out file), shown beside")
    args = parser.parse_args()
    parts, servers = set(args.only.split(",")), set(args.servers.split(","))
    columns: dict[str, dict[str, Any]] = json.loads(args.load.read_text()) if args.load else {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, _gemma, key = prepare_data_dir(tmp, "chat")
        store = ModelStore(data_dir / "models")
        install_bundled(store, frozenset({args.model}))
        gguf = store.source(args.model).path
        if "moltbot" in servers:
            env = {"MOLTBOT_MODELS": json.dumps([args.model]), "MOLTBOT_THREADS": "2", "MOLTBOT_PARALLEL": "1"}
            headers = {"Authorization": f"Bearer {key}"}
            with (
                running_server(data_dir, env) as server,
                httpx.Client(base_url=server.url, headers=headers, verify=server.verify, timeout=600) as client,
            ):
                columns["moltbot"] = run_suite(client, args.model, parts)
            args.out.write_text(json.dumps(columns))  # each column is kept as soon as it is measured
        if "llama-server" in servers and args.peer.is_file():
            log = Path(tmp) / "llama-server.log"
            with peer_server(args.peer, gguf, log) as url, httpx.Client(base_url=url, timeout=600) as client:
                columns["llama-server"] = run_suite(client, args.model, parts)
            args.out.write_text(json.dumps(columns))
        elif "llama-server" in servers:
            print(f"peer column skipped: no llama-server at {args.peer} (bench/build_llama_server.sh builds it)")
    print(
        f"\nassistant eval: {args.model}, greedy, {len(TOOL_CASES)} tool cases, "
        f"{len(INSTRUCTION_CASES)} instructions, {len(SCHEMA_CASES)} schemas\n"
    )
    report(columns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
