"""The Responses API's input items, their conversion to the engine's messages, and the stored-response
repository and service (owner scope, encryption at rest, chains)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from moltbot.engine.types import Role
from moltbot.gateway.errors import APIError
from moltbot.gateway.routes.responses import messages_of, normalize
from moltbot.services.responses import ResponseNotFoundError, ResponseService
from moltbot.storage.crypto import Vault
from moltbot.storage.database import create_database_engine, migrate
from moltbot.storage.keys import KeyStore, Scope
from moltbot.storage.responses import ResponseRepository

CANARY = "canary-response-7f3e"


def test_a_string_input_is_one_user_message() -> None:
    (item,) = normalize("hello")
    assert item["type"] == "message" and item["role"] == "user" and item["id"].startswith("msg_")
    assert item["content"] == [{"type": "input_text", "text": "hello"}]


def test_calls_and_outputs_become_one_assistant_message_and_tool_messages() -> None:
    items = normalize(
        [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city":"Rome"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "c2", "output": "rain"},
        ]
    )
    messages = messages_of(items)
    assert [m.role for m in messages] == [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.TOOL, Role.TOOL]
    assert [c.id for c in messages[2].tool_calls] == ["c1", "c2"]
    assert (messages[3].tool_call_id, messages[3].content) == ("c1", "sunny")


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}], "input.0.content.0"),
        ([{"type": "reasoning", "summary": []}], "input.0.type"),
        ([{"role": "robot", "content": "hi"}], "input.0.role"),
        ([{"type": "function_call", "name": "f", "arguments": "{}"}], "input.0.call_id"),
    ],
)
def test_what_cannot_be_read_is_refused_by_place(raw: list[dict[str, object]], param: str) -> None:
    with pytest.raises(APIError) as caught:
        normalize(raw)
    assert caught.value.status == 400 and caught.value.param == param


def test_stored_responses_are_owned_sealed_and_chained(tmp_path: Path) -> None:
    engine = create_database_engine(None, tmp_path / "db.sqlite")
    migrate(engine)
    keys = KeyStore(engine)
    alice, _ = keys.create("alice", frozenset({Scope.CHAT}))
    bob, _ = keys.create("bob", frozenset({Scope.CHAT}))
    service = ResponseService(ResponseRepository(engine, Vault(engine, tmp_path / "kek")))
    first_in = normalize(CANARY)
    first_out = [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}]

    async def run() -> None:
        await service.save(
            alice.id,
            "resp_1",
            model="m",
            previous_id=None,
            status="completed",
            document={"output": first_out},
            items=first_in,
        )
        second_in = normalize("again")
        await service.save(
            alice.id,
            "resp_2",
            model="m",
            previous_id="resp_1",
            status="completed",
            document={"output": []},
            items=second_in,
        )
        assert await service.conversation(alice.id, "resp_2") == [*first_in, *first_out, *second_in]
        with pytest.raises(ResponseNotFoundError):
            await service.get(bob.id, "resp_1")
        with pytest.raises(ResponseNotFoundError):
            await service.conversation(bob.id, "resp_2")
        await service.delete(alice.id, "resp_1")
        with pytest.raises(ResponseNotFoundError):  # the chain through a deleted response is broken
            await service.conversation(alice.id, "resp_2")

    asyncio.run(run())
    engine.dispose()
    assert CANARY.encode() not in (tmp_path / "db.sqlite").read_bytes()
