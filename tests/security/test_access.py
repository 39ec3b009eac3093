"""Access control through the real TLS server: every route denies without a key and without its scope,
path tricks reach nothing, the admin API for keys and the audit log, rate limits, client addresses,
CORS, security headers, JSON depth."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from moltbot.app import build_services, create_app
from moltbot.gateway.auth import PUBLIC_PATHS, ROUTE_SCOPES
from moltbot.gateway.errors import is_anthropic, is_ollama
from moltbot.resources import detect
from moltbot.settings import Settings, resolve
from moltbot.storage.keys import Scope
from tests.helpers import CHAT_MODEL, START_TIMEOUT_S, Server, create_key, log_records, running_server

PARAMS = {
    "model_id": CHAT_MODEL,
    "key_id": "0123456789ab",
    "session_id": "sess_" + "0" * 24,
    "response_id": "resp_" + "0" * 24,
    "document_id": "doc_" + "0" * 24,
    "node_id": "node_" + "0" * 24,
    "name": CHAT_MODEL,
}


@pytest.fixture(scope="module")
def guarded(make_data_dir: Callable[..., Path]) -> Iterator[Server]:
    with running_server(make_data_dir("guarded")) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield server


def app_routes(tmp_path: Path) -> list[Route]:
    """The routes of the app the server runs, built in this process."""
    settings = Settings(data_dir=tmp_path, bundled_models=False, monitor=False)
    app = create_app(build_services(resolve(settings, detect(tmp_path))))
    return list(app.state.routes)


def raw_request(server: Server, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """An HTTP/1.1 request with the path exactly as given (clients normalise `..` and `//`)."""
    context = ssl.create_default_context(cafile=str(server.ca_file))
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _error(path: str, response: httpx.Response) -> tuple[str, str]:
    """An error's type and message in the envelope of the route's API family (Ollama's has no type)."""
    body = response.json()
    if is_ollama(path):
        assert set(body) == {"error"}, body
        return "", body["error"]
    if is_anthropic(path):
        assert body["type"] == "error", body
    return body["error"]["type"], body["error"]["message"]


def test_every_route_denies_without_a_key_and_without_its_scope(guarded: Server, tmp_path: Path) -> None:
    routes = app_routes(tmp_path)
    assert {r.path for r in routes} >= set(ROUTE_SCOPES) | PUBLIC_PATHS
    # A key with one scope, and for the routes that need exactly that scope a key with another.
    unrelated = create_key(guarded.data_dir, "models:write", name="one-scope")
    other = create_key(guarded.data_dir, "metrics", name="another-scope")
    time.sleep(1.2)
    checked = 0
    with (
        guarded.client(unrelated) as with_key,
        guarded.client(other) as with_other,
        httpx.Client(base_url=guarded.url, verify=guarded.verify) as no_key,
    ):
        for route in routes:
            path = route.path.format(**PARAMS)
            wrong = with_other if ROUTE_SCOPES.get(route.path) is Scope.MODELS_WRITE else with_key
            for method in sorted((route.methods or set()) - {"HEAD"}):
                anonymous = no_key.request(method, path, json={})
                scoped = wrong.request(method, path, json={})
                if route.path in PUBLIC_PATHS:
                    assert anonymous.status_code in (200, 204, 307, 503), route.path  # 307: "/" to the chat page
                    continue
                assert anonymous.status_code == 401, (method, route.path)
                assert _error(route.path, anonymous)[0] in ("authentication_error", "")
                if ROUTE_SCOPES[route.path] is None:  # any valid key
                    assert scoped.status_code == 200, (method, route.path)
                else:
                    assert scoped.status_code == 403, (method, route.path, scoped.text)
                    assert ROUTE_SCOPES[route.path].value in _error(route.path, scoped)[1]  # type: ignore[union-attr]
                checked += 1
    assert checked >= 13


@pytest.mark.parametrize(
    "path",
    [
        "/v1/admin/keys/",
        "//v1/admin/keys",
        "/v1//admin/keys",
        "/v1/admin%2Fkeys",
        "/v1/admin/%6beys",
        "/V1/ADMIN/KEYS",
        "/v1/../v1/admin/keys",
        "/v1/models/../admin/keys",
        "/v1/admin/./keys",
        "/v1/admin/keys%00",
        "/v1/admin/keys;x=1",
        "/v1/admin/keys?x=/v1/models",
    ],
)
def test_path_variants_never_reach_a_protected_route(guarded: Server, path: str) -> None:
    chat_key = create_key(guarded.data_dir, "chat", name="chat-only")
    time.sleep(1.2)
    for headers in ({}, {"Authorization": f"Bearer {chat_key}"}):
        status, body = raw_request(guarded, "GET", path, headers)
        assert status in (307, 400, 401, 403, 404), (path, status, body[:200])
        assert b"api_key" not in body and b"token" not in body


def test_admin_api_creates_lists_and_revokes_keys_with_an_audit_trail(guarded: Server) -> None:
    with guarded.client() as admin:
        created = admin.post("/v1/admin/keys", json={"name": "ci-bot", "scopes": ["chat", "models:read"]})
        assert created.status_code == 201
        card = created.json()
        token, key_id = card["token"], card["id"]
        assert token.startswith(f"mb_{key_id}_") and card["scopes"] == ["chat", "models:read"]
        listed = admin.get("/v1/admin/keys").json()["data"]
        assert any(k["id"] == key_id for k in listed)
        assert "token" not in json.dumps(listed) and "hash" not in json.dumps(listed)
        assert admin.get(f"/v1/admin/keys/{key_id}").json()["name"] == "ci-bot"
        with guarded.client(token) as bot:
            assert bot.get("/v1/models").status_code == 200
            assert bot.get("/v1/admin/keys").status_code == 403
            assert admin.delete(f"/v1/admin/keys/{key_id}").json() == {
                "id": key_id,
                "object": "api_key",
                "revoked": True,
            }
            deadline = time.monotonic() + 5
            while bot.get("/v1/models").status_code != 401 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert bot.get("/v1/models").status_code == 401
        assert admin.delete(f"/v1/admin/keys/{key_id}").status_code == 404
        assert admin.get("/v1/admin/keys/not-hex").status_code == 400
        assert admin.get("/v1/admin/keys/ffffffffffff").status_code == 404
        assert admin.post("/v1/admin/keys", json={"name": "x", "scopes": ["root"]}).status_code == 400
        assert admin.post("/v1/admin/keys", json={"name": "x", "scopes": ["chat"], "admin": True}).status_code == 400
        audit = admin.get("/v1/admin/audit", params={"limit": 50}).json()["data"]
    admin_id = guarded.admin_key.split("_")[1]
    actions = [(e["actor"], e["action"], e["target"]) for e in audit]
    assert (f"key:{admin_id}", "key.create", key_id) in actions
    assert (f"key:{admin_id}", "key.revoke", key_id) in actions
    assert ("server", "key.create", admin_id) in actions
    assert any(actor.startswith("cli:") for actor, action, _ in actions if action == "key.create")
    assert token not in json.dumps(audit)


def test_the_audit_log_is_append_only(guarded: Server) -> None:
    connection = sqlite3.connect(guarded.data_dir / "moltbot.db")
    try:
        for statement in ("UPDATE audit_log SET actor = 'someone'", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                connection.execute(statement)
    finally:
        connection.close()


def test_security_headers_and_no_cors_by_default(guarded: Server) -> None:
    with guarded.client() as client:
        for response in (
            client.get("/v1/models", headers={"Origin": "https://evil.example"}),
            client.get("/v1/admin/keys/ffffffffffff"),
            guarded.get("/v1/models"),
        ):
            headers = response.headers
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["cache-control"] == "no-store"
            assert headers["strict-transport-security"].startswith("max-age=")
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert "access-control-allow-origin" not in headers
        preflight = client.options(
            "/v1/chat/completions",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers


def test_deeply_nested_json_is_a_clear_400(guarded: Server) -> None:
    with guarded.client() as client:
        for depth in (100, 200_000):
            body = b'{"model": "x", "messages": ' + b"[" * depth + b"]" * depth + b"}"
            response = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 400, depth
            assert "deeper than 64" in response.json()["error"]["message"]
        assert client.get("/v1/models").status_code == 200


def test_rate_limits_answer_429_with_retry_after(make_data_dir: Callable[..., Path]) -> None:
    env = {"MOLTBOT_RATE_LIMIT_RPM": "5", "MOLTBOT_RATE_LIMIT_TPM": "40", "MOLTBOT_BUNDLED_MODELS": "false"}
    with running_server(make_data_dir("limited"), env) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        with server.client() as client:
            first = client.get("/v1/models")
            assert first.headers["x-ratelimit-limit-requests"] == "5"
            assert first.headers["x-ratelimit-remaining-requests"] == "4"
            statuses = [client.get("/v1/models").status_code for _ in range(5)]
            assert statuses == [200, 200, 200, 200, 429]
            refused = client.get("/v1/models")
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert 1 <= int(refused.headers["retry-after"]) <= 12  # one request every 12 s
            assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        other = create_key(server.data_dir, "models:read", name="other")
        time.sleep(1.2)
        with server.client(other) as client:
            assert client.get("/v1/models").status_code == 200  # limits are per key


def test_tokens_per_minute(make_data_dir: Callable[..., Path]) -> None:
    env = {"MOLTBOT_RATE_LIMIT_TPM": "30"}
    with running_server(make_data_dir("tpm"), env) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        body = {"model": CHAT_MODEL, "prompt": "One, two, three,", "max_tokens": 40, "temperature": 0}
        with server.client() as client:
            first = client.post("/v1/completions", json=body)
            assert first.status_code == 200 and first.json()["usage"]["total_tokens"] > 30
            refused = client.post("/v1/completions", json=body)
            assert refused.status_code == 429 and "tokens per minute" in refused.json()["error"]["message"]
            assert int(refused.headers["retry-after"]) >= 1


def test_failed_keys_are_limited_per_address_and_forwarded_for_is_not_believed(
    make_data_dir: Callable[..., Path],
) -> None:
    env = {"MOLTBOT_AUTH_FAILURES_PER_MINUTE": "3", "MOLTBOT_BUNDLED_MODELS": "false"}
    with running_server(make_data_dir("brute"), env, ready=False) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        with httpx.Client(base_url=server.url, verify=server.verify) as client:
            bad = {"Authorization": "Bearer mb_000000000000_wrong"}
            assert [client.get("/v1/models", headers=bad).status_code for _ in range(3)] == [401, 401, 401]
            blocked = client.get("/v1/models", headers=bad)
            assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
            spoofed = client.get("/v1/models", headers={**bad, "X-Forwarded-For": "203.0.113.77"})
            assert spoofed.status_code == 429  # a header the client wrote changes nothing
            good = client.get("/v1/models", headers={"Authorization": f"Bearer {server.admin_key}"})
            assert good.status_code == 429  # the address waits, whatever key it now shows
    records = [r for r in log_records(server.stderr()) if r.get("logger") == "moltbot.access"]
    assert records and all(r["client"] == "127.0.0.1" for r in records)


def test_a_trusted_proxy_forwards_client_addresses(make_data_dir: Callable[..., Path]) -> None:
    env = {
        "MOLTBOT_AUTH_FAILURES_PER_MINUTE": "2",
        "MOLTBOT_TRUSTED_PROXIES": '["127.0.0.1"]',
        "MOLTBOT_BUNDLED_MODELS": "false",
    }
    with (
        running_server(make_data_dir("proxied"), env, ready=False) as server,
        httpx.Client(base_url=server.url, verify=server.verify) as client,
    ):
        bad = {"Authorization": "Bearer mb_000000000000_wrong"}
        for _ in range(2):
            client.get("/v1/models", headers={**bad, "X-Forwarded-For": "203.0.113.1"})
        assert client.get("/v1/models", headers={**bad, "X-Forwarded-For": "203.0.113.1"}).status_code == 429
        assert client.get("/v1/models", headers={**bad, "X-Forwarded-For": "203.0.113.2"}).status_code == 401
    clients = {r.get("client") for r in log_records(server.stderr()) if r.get("logger") == "moltbot.access"}
    assert {"203.0.113.1", "203.0.113.2"} <= clients


def test_debug_logs_hold_no_key(make_data_dir: Callable[..., Path]) -> None:
    # At debug level the WebSocket library logs every handshake header: the key a browser sends in
    # OpenAI's subprotocol, and a bearer header, must come out masked.
    from websockets.exceptions import InvalidStatus, WebSocketException
    from websockets.sync.client import connect

    data_dir = make_data_dir("debug-logs")
    key = create_key(data_dir, "audio,chat", name="debug")
    env = {"MOLTBOT_LOG_LEVEL": "debug", "MOLTBOT_BUNDLED_MODELS": "false"}
    with running_server(data_dir, env, ready=False) as server:
        url = server.base_url.replace("https://", "wss://").removesuffix("/v1") + "/v1/realtime"
        for headers, protocols in (
            ({}, ["realtime", f"openai-insecure-api-key.{key}"]),
            ({"Authorization": f"Bearer {key}"}, None),
        ):
            # Refused or closed: the handshake was logged either way.
            with contextlib.suppress(InvalidStatus, WebSocketException, OSError):
                connect(
                    url, ssl=server.verify, additional_headers=headers, subprotocols=protocols, open_timeout=30
                ).close()
        with server.client(key) as client:
            client.get("/v1/models")
    logged = server.stderr()
    assert "sec-websocket-protocol" in logged.casefold()  # the headers were logged, at debug level
    secret = key.split("_", 2)[2]
    assert secret not in logged
