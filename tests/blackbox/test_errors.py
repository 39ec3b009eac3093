"""Bad input gets the OpenAI error envelope with the right status; never a traceback or a path."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from moltbot.gateway.errors import is_anthropic, is_ollama
from tests.helpers import CHAT_MODEL, EMBEDDING_MODEL, Server, create_key

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]


def assert_envelope(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param
    for leak in ("Traceback", 'File "', "/moltbot/", ".py", "site-packages"):
        assert leak not in response.text
    return error


ROUTES = [
    ("GET", "/v1/models"),
    ("GET", f"/v1/models/{CHAT_MODEL}"),
    ("POST", CHAT),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("GET", "/openapi.json"),
    ("GET", "/no/such/route"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Bearer mb_0000_nope", "Basic abc"])
def test_401_without_a_valid_key(server: Server, method: str, path: str, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    response = httpx.request(method, server.url + path, headers=headers, json={}, verify=server.verify)
    error = assert_envelope(response, 401)
    assert error["type"] == "authentication_error"
    assert response.headers["www-authenticate"] == "Bearer"


def test_every_documented_route_needs_a_key(server: Server) -> None:
    with server.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert len(paths) >= 5
    for path, operations in paths.items():
        concrete = path.replace("{model_id}", CHAT_MODEL)
        for method in operations:
            response = httpx.request(method.upper(), server.url + concrete, json={}, verify=server.verify)
            if is_ollama(path):  # each API family answers in its own envelope
                assert response.status_code == 401 and set(response.json()) == {"error"}
            elif is_anthropic(path):
                assert response.status_code == 401
                assert response.json()["error"]["type"] == "authentication_error"
            else:
                assert_envelope(response, 401)


def test_health_routes_are_open(server: Server) -> None:
    assert server.get("/healthz").json() == {"status": "ok"}
    assert server.get("/readyz").status_code == 200


def test_openapi_document_with_a_key(server: Server) -> None:
    with server.client() as client:
        document = client.get("/openapi.json").json()
    assert CHAT in document["paths"]


def test_403_when_the_scope_is_missing(server: Server) -> None:
    key = create_key(server.data_dir, "embeddings", name="embed-only")
    with server.client(key) as client:
        assert_envelope(client.post(CHAT, json={"model": CHAT_MODEL, "messages": HELLO}), 403)
        assert_envelope(client.get("/v1/models"), 403)
        ok = client.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": "hi"})
        assert ok.status_code == 200


def test_revoked_key_is_refused(server: Server) -> None:
    key = create_key(server.data_dir, "chat,models:read", name="short-lived")
    with server.client(key) as client:
        assert client.get("/v1/models").status_code == 200
        key_id = key.split("_")[1]
        from tests.helpers import run_cli

        assert run_cli(server.data_dir, "keys", "revoke", key_id).returncode == 0
        # The server re-reads a key at most a second after it last read it.
        deadline = time.monotonic() + 5
        while client.get("/v1/models").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert_envelope(client.get("/v1/models"), 401)


BAD_CHAT: list[tuple[dict[str, Any], int, str | None]] = [
    ({"model": "no-such-model", "messages": HELLO}, 404, "model"),
    ({"model": CHAT_MODEL}, 400, "messages"),
    ({"model": CHAT_MODEL, "messages": []}, 400, "messages"),
    ({"model": CHAT_MODEL, "messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0"),  # no tool_call_id
    ({"model": CHAT_MODEL, "messages": [{"role": "function", "content": "x"}]}, 400, "messages.0.role"),
    ({"model": CHAT_MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, None),
    ({"model": CHAT_MODEL, "messages": HELLO, "temperature": 3}, 400, "temperature"),
    ({"model": CHAT_MODEL, "messages": HELLO, "top_p": 0}, 400, "top_p"),
    ({"model": CHAT_MODEL, "messages": HELLO, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": CHAT_MODEL, "messages": HELLO, "max_tokens": 100_000}, 400, "max_tokens"),
    ({"model": CHAT_MODEL, "messages": HELLO, "max_tokens": 4090}, 400, "max_tokens"),
    ({"model": CHAT_MODEL, "messages": HELLO, "n": 5}, 400, "n"),
    ({"model": CHAT_MODEL, "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": CHAT_MODEL, "messages": HELLO, "stop": ["x" * 300]}, 400, "stop"),
    ({"model": CHAT_MODEL, "messages": HELLO, "tools": [{"type": "function"}]}, 400, "tools.0"),
    ({"model": CHAT_MODEL, "messages": HELLO, "top_logprobs": 3}, 400, "top_logprobs"),  # without logprobs
    ({"model": CHAT_MODEL, "messages": HELLO, "response_format": {"type": "xml"}}, 400, "response_format.type"),
    ({"model": CHAT_MODEL, "messages": HELLO, "response_format": {"type": "json_schema"}}, 400, None),
    ({"model": CHAT_MODEL, "messages": HELLO * 300}, 400, "messages"),
    ({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "word " * 5000}]}, 400, "messages"),
    ({"model": EMBEDDING_MODEL, "messages": HELLO}, 400, "model"),
]


@pytest.mark.parametrize(("body", "status", "param"), BAD_CHAT)
def test_bad_chat_requests(server: Server, body: dict[str, Any], status: int, param: str | None) -> None:
    with server.client() as client:
        assert_envelope(client.post(CHAT, json=body), status, param)
        body["stream"] = True
        assert_envelope(client.post(CHAT, json=body), status, param)


def test_context_length_code(server: Server) -> None:
    long_prompt = [{"role": "user", "content": "word " * 5000}]
    with server.client() as client:
        error = assert_envelope(client.post(CHAT, json={"model": CHAT_MODEL, "messages": long_prompt}), 400)
    assert error["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": EMBEDDING_MODEL, "input": ""}, "input"),
        ({"model": EMBEDDING_MODEL, "input": []}, "input"),
        ({"model": EMBEDDING_MODEL, "input": ["x"] * 1000}, "input"),
        ({"model": EMBEDDING_MODEL, "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"model": EMBEDDING_MODEL, "input": "x", "dimensions": 12}, "dimensions"),
        ({"model": CHAT_MODEL, "input": "x"}, "model"),
    ],
)
def test_bad_embedding_requests(server: Server, body: dict[str, Any], param: str) -> None:
    with server.client() as client:
        assert_envelope(client.post("/v1/embeddings", json=body), 400, param)


def test_bad_completion_requests(server: Server) -> None:
    with server.client() as client:
        assert_envelope(client.post("/v1/completions", json={"model": CHAT_MODEL}), 400, "prompt")
        assert_envelope(client.post("/v1/completions", json={"model": CHAT_MODEL, "prompt": []}), 400, "prompt")
        body = {"model": CHAT_MODEL, "prompt": "hi", "logprobs": 2, "echo": True}  # the prompt's are not computed
        assert_envelope(client.post("/v1/completions", json=body), 400, "echo")
        body = {"model": CHAT_MODEL, "prompt": "hi", "best_of": 3}
        assert_envelope(client.post("/v1/completions", json=body), 400, "best_of")


def test_malformed_json(server: Server) -> None:
    with server.client() as client:
        for raw in (b"{bad", b"[1, 2]", b"", b"\xff\xfe"):
            response = client.post(CHAT, content=raw, headers={"content-type": "application/json"})
            assert_envelope(response, 400)


def test_unknown_model_get_is_404(server: Server) -> None:
    with server.client() as client:
        error = assert_envelope(client.get("/v1/models/no-such-model"), 404)
    assert error["code"] == "model_not_found"


def test_unknown_route_and_method(server: Server) -> None:
    with server.client() as client:
        assert_envelope(client.get("/v1/nothing"), 404)
        assert_envelope(client.delete("/v1/models"), 405)
        assert_envelope(client.get(CHAT), 405)


def test_body_over_the_limit_is_413(server: Server) -> None:
    big = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "a" * (2 << 20)}]}
    with server.client() as client:
        assert_envelope(client.post(CHAT, json=big), 413)


def test_body_over_the_limit_without_length_is_413(server: Server) -> None:
    def chunks() -> Any:
        for _ in range(40):
            yield b"a" * 65536

    with server.client() as client:
        assert_envelope(client.post(CHAT, content=chunks(), headers={"content-type": "application/json"}), 413)


def test_headers_over_the_limit_are_431(server: Server) -> None:
    with server.client() as client:
        assert_envelope(client.get("/v1/models", headers={"x-big": "a" * 20_000}), 431)
        many = {f"x-h{i}": "1" for i in range(150)}
        assert_envelope(client.get("/v1/models", headers=many), 431)


def test_unknown_fields_are_ignored(server: Server) -> None:
    body = {"model": CHAT_MODEL, "messages": HELLO, "max_tokens": 2, "store": False, "some_vendor_field": 1}
    with server.client() as client:
        assert client.post(CHAT, json=body).status_code == 200
