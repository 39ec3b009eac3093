"""Sessions through the real server: lifecycle, turns (plain, streamed, interrupted), ownership,
truncation, export/import, pagination, encryption at rest, warm context."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import CHAT_MODEL, START_TIMEOUT_S, Server, create_key, run_cli, running_server

CANARY = "canary-93be-session-plaintext"


@pytest.fixture(scope="module")
def kept(make_data_dir: Callable[..., Path]) -> Iterator[Server]:
    with running_server(make_data_dir("sessions")) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield server


@pytest.fixture(scope="module")
def alice(kept: Server) -> Iterator[httpx.Client]:
    key = create_key(kept.data_dir, "sessions", name="alice")
    time.sleep(1.2)
    with kept.client(key) as client:
        yield client


@pytest.fixture(scope="module")
def bob(kept: Server) -> Iterator[httpx.Client]:
    key = create_key(kept.data_dir, "sessions", name="bob")
    time.sleep(1.2)
    with kept.client(key) as client:
        yield client


def new_session(client: httpx.Client, **fields: object) -> dict[str, object]:
    response = client.post("/v1/sessions", json={"model": CHAT_MODEL, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_lifecycle(alice: httpx.Client) -> None:
    session = new_session(alice, title="Trip", metadata={"tag": "travel"}, system_prompt="You are terse.")
    sid = session["id"]
    assert str(sid).startswith("sess_") and session["message_count"] == 0
    got = alice.get(f"/v1/sessions/{sid}").json()
    assert got["title"] == "Trip" and got["metadata"] == {"tag": "travel"} and got["messages"] == []
    patched = alice.patch(f"/v1/sessions/{sid}", json={"title": "Trip to Rome"}).json()
    assert patched["title"] == "Trip to Rome" and patched["metadata"] == {"tag": "travel"}
    assert alice.delete(f"/v1/sessions/{sid}").json() == {"id": sid, "object": "session", "deleted": True}
    assert alice.get(f"/v1/sessions/{sid}").status_code == 404


def test_a_turn_stores_both_messages(alice: httpx.Client) -> None:
    sid = new_session(alice, system_prompt="Answer briefly.")["id"]
    reply = alice.post(f"/v1/sessions/{sid}/messages", json={"content": "Name a colour.", "max_tokens": 8})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "chat.completion" and body["session_id"] == sid and body["truncated_messages"] == 0
    answer = body["choices"][0]["message"]["content"]
    stored = alice.get(f"/v1/sessions/{sid}").json()["messages"]
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "complete")]
    assert stored[0]["content"] == "Name a colour." and stored[1]["content"] == answer
    assert stored[1]["id"] == body["message_id"] and stored[0]["id"] == body["user_message_id"]


def sse_events(response: httpx.Response) -> list[dict[str, object]]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(json.loads(line[6:]))
    return events


def test_a_streamed_turn(alice: httpx.Client) -> None:
    sid = new_session(alice)["id"]
    body = {"content": "Count: 1, 2, 3,", "max_tokens": 12, "stream": True, "temperature": 0}
    with alice.stream("POST", f"/v1/sessions/{sid}/messages", json=body) as response:
        assert response.status_code == 200
        events = sse_events(response)
    chunks = [e for e in events if e["choices"]]
    assert all(e["object"] == "chat.completion.chunk" and e["session_id"] == sid for e in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)  # type: ignore[index]
    final = events[-1]
    assert final["usage"]["completion_tokens"] >= 1  # type: ignore[index]
    stored = alice.get(f"/v1/sessions/{sid}").json()["messages"]
    assert stored[-1]["id"] == final["message_id"] and stored[-1]["content"] == text


def test_a_stream_the_client_leaves_is_stored_as_interrupted(alice: httpx.Client) -> None:
    sid = new_session(alice)["id"]
    body = {"content": "Count from 1 to 500: 1, 2, 3,", "max_tokens": 400, "stream": True, "temperature": 0}
    with alice.stream("POST", f"/v1/sessions/{sid}/messages", json=body) as response:
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen += 1
            if seen >= 6:
                break
    deadline = time.monotonic() + 10
    stored: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        stored = alice.get(f"/v1/sessions/{sid}").json()["messages"]
        if len(stored) == 2:
            break
        time.sleep(0.1)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["status"] == "interrupted" and str(stored[1]["content"]).strip()


def test_another_keys_session_does_not_exist(alice: httpx.Client, bob: httpx.Client) -> None:
    sid = new_session(alice, title="private")["id"]
    for method, path, payload in (
        ("GET", f"/v1/sessions/{sid}", None),
        ("PATCH", f"/v1/sessions/{sid}", {"title": "mine now"}),
        ("DELETE", f"/v1/sessions/{sid}", None),
        ("GET", f"/v1/sessions/{sid}/export", None),
        ("POST", f"/v1/sessions/{sid}/messages", {"content": "hi", "max_tokens": 1}),
    ):
        response = bob.request(method, path, json=payload)
        assert response.status_code == 404, (method, path)
        assert "private" not in response.text
    assert sid not in {s["id"] for s in bob.get("/v1/sessions", params={"limit": 100}).json()["data"]}
    assert alice.get(f"/v1/sessions/{sid}").json()["title"] == "private"  # untouched


def test_bad_ids_and_inputs(alice: httpx.Client) -> None:
    assert alice.get("/v1/sessions/not-an-id").status_code == 400
    assert alice.get("/v1/sessions/sess_" + "0" * 24).status_code == 404
    sid = new_session(alice)["id"]
    assert alice.post(f"/v1/sessions/{sid}/messages", json={"content": ""}).status_code == 400
    assert alice.post(f"/v1/sessions/{sid}/messages", json={"content": "x" * 100_001}).status_code == 400
    assert alice.post(f"/v1/sessions/{sid}/messages", json={"content": "x" * 2_000_000}).status_code == 413
    assert alice.post(f"/v1/sessions/{sid}/messages", json={"content": "hi", "max_tokens": 10**6}).status_code == 400
    assert alice.post("/v1/sessions", json={"model": "no-such-model"}).status_code == 404
    assert alice.post("/v1/sessions", json={"model": CHAT_MODEL, "owner": "x"}).status_code == 400
    assert alice.get("/v1/sessions", params={"after": "garbage"}).status_code == 400
    assert alice.get(f"/v1/sessions/{sid}").json()["messages"] == []  # nothing half-written


def test_export_import_round_trip(alice: httpx.Client, bob: httpx.Client) -> None:
    sid = new_session(alice, title="exported", system_prompt="Be kind.")["id"]
    alice.post(f"/v1/sessions/{sid}/messages", json={"content": "Hello", "max_tokens": 4})
    exported = alice.get(f"/v1/sessions/{sid}/export").json()
    assert exported["object"] == "session.export" and len(exported["messages"]) == 2
    imported = bob.post("/v1/sessions/import", json=exported)
    assert imported.status_code == 201
    copy = imported.json()
    assert copy["id"] != sid and copy["title"] == "exported" and copy["system_prompt"] == "Be kind."
    assert [(m["role"], m["content"]) for m in copy["messages"]] == [
        (m["role"], m["content"]) for m in exported["messages"]
    ]


def test_long_history_drops_the_oldest_turns(alice: httpx.Client) -> None:
    filler = " ".join(f"word{i}" for i in range(150))
    history = []
    for i in range(40):
        history += [{"role": "user", "content": f"{i}: {filler}"}, {"role": "assistant", "content": f"ok {i}"}]
    sid = alice.post("/v1/sessions/import", json={"model": CHAT_MODEL, "system_prompt": "Kept.", "messages": history})
    reply = alice.post(f"/v1/sessions/{sid.json()['id']}/messages", json={"content": "And now?", "max_tokens": 4})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["truncated_messages"] > 0 and body["truncated_messages"] % 2 == 0  # whole turns
    assert body["usage"]["prompt_tokens"] + 4 <= 4096


def test_pagination_newest_first(alice: httpx.Client) -> None:
    made = [new_session(alice, title=f"page {i}")["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["after"] = cursor
        page = alice.get("/v1/sessions", params=params).json()
        seen += [s["id"] for s in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert seen[:5] == made[::-1]
    assert len(seen) == len(set(seen))


def test_contents_are_encrypted_at_rest(kept: Server, alice: httpx.Client) -> None:
    sid = new_session(alice, title=f"title {CANARY}", metadata={"note": CANARY}, system_prompt=CANARY)["id"]
    reply = alice.post(f"/v1/sessions/{sid}/messages", json={"content": f"remember {CANARY}", "max_tokens": 4})
    assert reply.status_code == 200
    got = alice.get(f"/v1/sessions/{sid}").json()
    assert got["system_prompt"] == CANARY and CANARY in got["title"] and got["messages"][0]["content"].endswith(CANARY)
    hits = [p.name for p in kept.data_dir.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()]
    assert hits == [], hits  # database, WAL, logs, everything under the data directory


def test_the_next_turn_reuses_the_conversation_in_the_kv_cache(kept: Server, alice: httpx.Client) -> None:
    def reused() -> float:
        with kept.client() as client:
            text = client.get("/metrics").text
        for family in text_string_to_metric_families(text):
            if family.name == "moltbot_engine_cache_reused_tokens":
                return sum(s.value for s in family.samples if s.labels.get("model") == CHAT_MODEL)
        return 0.0

    sid = new_session(alice, system_prompt="You are a helpful assistant.")["id"]
    first = alice.post(f"/v1/sessions/{sid}/messages", json={"content": "Tell me about Rome.", "max_tokens": 16})
    before = reused()
    second = alice.post(f"/v1/sessions/{sid}/messages", json={"content": "And Paris?", "max_tokens": 4})
    assert second.status_code == 200
    gained = reused() - before
    assert gained >= first.json()["usage"]["prompt_tokens"]  # turn 1's prompt was not computed again


def test_cli_lists_shows_exports_and_removes(kept: Server, alice: httpx.Client) -> None:
    sid = new_session(alice, title="from the cli")["id"]
    alice.post(f"/v1/sessions/{sid}/messages", json={"content": "CLI hello", "max_tokens": 2})
    listed = run_cli(kept.data_dir, "sessions", "list")
    assert listed.returncode == 0 and sid in listed.stdout and "from the cli" in listed.stdout
    shown = run_cli(kept.data_dir, "sessions", "show", str(sid))
    assert "[user] CLI hello" in shown.stdout
    exported = json.loads(run_cli(kept.data_dir, "sessions", "export", str(sid)).stdout)
    assert exported == alice.get(f"/v1/sessions/{sid}/export").json()
    assert run_cli(kept.data_dir, "sessions", "rm", str(sid)).returncode == 0
    assert alice.get(f"/v1/sessions/{sid}").status_code == 404
    assert run_cli(kept.data_dir, "sessions", "rm", str(sid)).returncode == 1
