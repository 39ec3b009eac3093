"""/v1/pipelines through the real server, with a third-party step installed by entry point, and the CLI."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import START_TIMEOUT_S, Server, create_key, run_cli, running_server
from tests.pipeline_plugin import write_step_plugin

PAGES = [
    "Journal of Results, Vol. 3 (2024)\nSmith et al.\n\nThe experi-\nment used a large corpus. Write to "
    f"alice@example.org for the data.\n\n{n}\n"
    if n % 2
    else f"Journal of Results, Vol. 3 (2024)\nSmith et al.\n\nA second page about the baseline and its errors.\n\n{n}\n"
    for n in range(1, 5)
]


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_step_plugin(tmp_path_factory.mktemp("plugin"))


@pytest.fixture(scope="module")
def server(make_data_dir: Callable[..., Path], plugin_dir: Path) -> Iterator[Server]:
    python_path = os.pathsep.join(p for p in (str(plugin_dir), os.environ.get("PYTHONPATH", "")) if p)
    with running_server(make_data_dir("pipelines"), {"PYTHONPATH": python_path}) as srv:
        srv.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client(create_key(server.data_dir, "documents", name="docs")) as http:
        yield http


def test_steps_and_shipped_pipelines_are_listed(client: httpx.Client) -> None:
    steps = client.get("/v1/pipelines/steps").json()
    by_name = {s["name"]: s for s in steps["data"]}
    assert {"normalize_unicode", "chunk", "redact_pii", "shout"} <= set(by_name)
    assert by_name["shout"]["source"] == "moltbot-test-steps" and by_name["chunk"]["source"] == "builtin"
    assert by_name["chunk"]["options"]["properties"]["max_tokens"]["default"] == 256
    assert {u["name"] for u in steps["unavailable"]} == {"chunk", "number", "broken"}
    presets = client.get("/v1/pipelines").json()["data"]
    assert "documents" in {p["name"] for p in presets}


def test_run_the_documents_pipeline_over_pages(client: httpx.Client) -> None:
    response = client.post("/v1/pipelines/run", json={"pipeline": "documents", "pages": PAGES})
    assert response.status_code == 200, response.text
    body = response.json()
    segments = body["document"]["segments"]
    assert [s["page"] for s in segments] == [1, 2, 3, 4]
    assert "Journal of Results" not in segments[0]["text"] and "experiment used" in segments[0]["text"]
    assert body["document"]["meta"]["language"] == "en"
    assert [r["step"] for r in body["report"]][-1] == "chunk"
    notes = body["report"][1]["notes"]  # two running-head lines and a page number on each of 4 pages
    assert notes["header_footer_lines_removed"] + notes["page_number_lines_removed"] == 12
    chunks = body["document"]["chunks"]
    assert chunks and all(c["text"] in segments[c["page"] - 1]["text"] for c in chunks)


def test_a_yaml_definition_with_a_plugin_step(client: httpx.Client) -> None:
    definition = "name: loud\nsteps:\n  - step: redact_pii\n    kinds: [email]\n  - step: shout\n    suffix: '?!'\n"
    checked = client.post("/v1/pipelines/validate", json={"pipeline_yaml": definition})
    assert checked.status_code == 200, checked.text
    assert checked.json()["pipeline"]["steps"][0] == {
        "step": "redact_pii",
        "kinds": ["email"],
        "region": "US",
        "replacement": "[{kind}]",
        "patterns": {},
    }
    ran = client.post("/v1/pipelines/run", json={"pipeline_yaml": definition, "text": "mail bob@x.org now"}).json()
    assert ran["document"]["segments"][0]["text"] == "MAIL [EMAIL] NOW?!"
    assert ran["report"][1]["notes"] == {"shouted": 1}


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"pipeline": {"steps": [{"step": "chunk", "overlap": 500}]}}, "steps[0].overlap", "steps[0] (chunk)"),
        ({"pipeline": {"steps": [{"step": "shot"}]}}, "steps[0].step", "unknown step 'shot'"),
        ({"pipeline": "nope"}, "pipeline", "unknown pipeline"),
        ({"pipeline_yaml": "a: &x [1]\nb: *x\n"}, None, "aliases are not allowed"),
        ({"pipeline": "text", "pipeline_yaml": "steps: []"}, None, "exactly one"),
        ({}, None, "exactly one"),
    ],
)
def test_bad_definitions_are_400s_naming_the_step_and_field(
    client: httpx.Client, body: dict[str, object], param: str | None, words: str
) -> None:
    response = client.post("/v1/pipelines/validate", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert words in error["message"] and error["param"] == param and error["type"] == "invalid_request_error"


def test_bad_run_input_and_a_runaway_pattern_are_400s(client: httpx.Client) -> None:
    both = client.post("/v1/pipelines/run", json={"pipeline": "text", "text": "a", "pages": ["b"]})
    assert both.status_code == 400 and "exactly one of `text` and `pages`" in both.json()["error"]["message"]
    wrong_type = client.post("/v1/pipelines/run", json={"pipeline": "text", "pages": "not a list"})
    assert wrong_type.status_code == 400
    slow = {"steps": [{"step": "redact_pii", "kinds": [], "patterns": {"slow": "(a|aa)+$"}}]}
    response = client.post("/v1/pipelines/run", json={"pipeline": slow, "text": "a" * 40 + "b"})
    assert response.status_code == 400, response.text
    assert (
        response.json()["error"]["code"] == "pipeline_failed" and response.json()["error"]["param"] == "patterns.slow"
    )
    assert client.get("/v1/pipelines").status_code == 200  # the server is fine


def test_the_documents_scope_is_required(server: Server) -> None:
    with server.client(create_key(server.data_dir, "chat", name="chatter")) as other:
        response = other.post("/v1/pipelines/run", json={"pipeline": "text", "text": "x"})
    assert response.status_code == 403 and "documents" in response.json()["error"]["message"]


def test_the_cli_runs_a_pipeline_on_a_file(tmp_path: Path) -> None:
    source = tmp_path / "paper.txt"
    source.write_text("\f".join(PAGES), encoding="utf-8")
    result = run_cli(tmp_path, "pipeline", "run", "documents", str(source), "--pages")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert len(body["document"]["segments"]) == 4 and body["document"]["chunks"]
    assert "chunk" in result.stderr  # the per-step timing table
    definition = tmp_path / "bad.yaml"
    definition.write_text("steps:\n  - step: chunk\n    max_tokens: 2\n")
    bad = run_cli(tmp_path, "pipeline", "validate", str(definition))
    assert bad.returncode == 1 and "steps[0].max_tokens" in bad.stderr
    listed = run_cli(tmp_path, "pipeline", "steps")
    assert listed.returncode == 0 and "remove_near_duplicates" in listed.stdout
