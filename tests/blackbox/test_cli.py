"""The moltbot CLI: keys, models, doctor, and the terminal chat against the real server."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import CHAT_MODEL, EMBEDDING_MODEL, Server, run_cli


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    created = run_cli(tmp_path, "keys", "create", "--name", "ci", "--scopes", "chat,admin")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("mb_") and len(token) > 40
    listed = run_cli(tmp_path, "keys", "list").stdout
    assert "ci" in listed and "admin,chat" in listed and "active" in listed
    assert token not in listed
    key_id = token.split("_")[1]
    assert run_cli(tmp_path, "keys", "revoke", key_id).returncode == 0
    assert "revoked" in run_cli(tmp_path, "keys", "list").stdout
    assert run_cli(tmp_path, "keys", "revoke", key_id).returncode == 1


def test_keys_create_rejects_unknown_scope(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "keys", "create", "--name", "x", "--scopes", "chat,root")
    assert result.returncode == 2
    assert "unknown scope 'root'" in result.stderr


def test_invalid_setting_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "keys", "list", timeout=60)
    assert result.returncode == 0
    import os
    import subprocess
    import sys

    env = {**os.environ, "MOLTBOT_DATA_DIR": str(tmp_path), "MOLTBOT_PORT": "99999"}
    bad = subprocess.run(
        [sys.executable, "-m", "moltbot", "serve"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 2
    assert "invalid settings" in bad.stderr and "port" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_models_list_and_doctor(server: Server) -> None:
    listed = run_cli(server.data_dir, "models", "list")
    assert CHAT_MODEL in listed.stdout and EMBEDDING_MODEL in listed.stdout
    doctor = run_cli(server.data_dir, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "profile" in doctor.stdout
    assert f"model {CHAT_MODEL}" in doctor.stdout and "loads" in doctor.stdout


def test_terminal_chat_streams_an_answer(server: Server) -> None:
    result = run_cli(
        server.data_dir,
        "chat",
        "--url",
        server.base_url,
        "--key",
        server.admin_key,
        "--temperature",
        "0",
        stdin="What is the capital of France?\n",
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_terminal_chat_finds_the_running_server_without_flags(server: Server) -> None:
    """The server runs on a random port (MOLTBOT_PORT in its environment only): the CLI finds it, and
    takes a base URL with or without /v1."""
    question = "What is the capital of France?\n"
    found = run_cli(server.data_dir, "chat", "--key", server.admin_key, "--temperature", "0", stdin=question)
    assert found.returncode == 0, found.stderr
    assert "Paris" in found.stdout and f":{server.port}/v1" in found.stdout
    bare = run_cli(
        server.data_dir,
        "chat",
        "--url",
        server.url + "/",
        "--key",
        server.admin_key,
        "--temperature",
        "0",
        stdin=question,
    )
    assert bare.returncode == 0, bare.stderr
    assert "Paris" in bare.stdout and "no such route" not in bare.stdout


def test_ca_shows_the_running_servers_address(server: Server) -> None:
    shown = run_cli(server.data_dir, "ca")
    assert shown.returncode == 0, shown.stderr
    assert f"https://127.0.0.1:{server.port}/healthz" in shown.stdout
    assert f'base_url="https://127.0.0.1:{server.port}/v1"' in shown.stdout
    assert ":8080" not in shown.stdout


def test_alerts_without_a_url_reach_the_running_server(server: Server) -> None:
    result = run_cli(server.data_dir, "alerts", "--key", server.admin_key)
    assert result.returncode == 0, result.stderr
