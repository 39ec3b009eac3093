"""Blue-green deploy and rollback through the real server, under streaming load; encrypted packages
through a real registry."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from moltbot.models.store import ModelStore
from tests.blackbox.test_model_repository import cli_fails, cli_ok, moved_bytes
from tests.helpers import CHAT_MODEL, START_TIMEOUT_S, running_server
from tests.models import StreamingLoad, tuned_copy
from tests.registry import Registry, registry_env

CLIENTS = 10


def versions(client: httpx.Client) -> dict[int, dict[str, object]]:
    reply = client.get(f"/v1/admin/models/{CHAT_MODEL}/versions")
    assert reply.status_code == 200, reply.text
    return {int(v["version"]): v for v in reply.json()["data"]}


def wait_unloaded(client: httpx.Client, number: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if versions(client)[number]["load_state"] == "on_disk":
            return
        time.sleep(0.1)
    raise AssertionError(f"version {number} was not unloaded")


def with_version_2(
    make_data_dir: Callable[..., Path], name: str, derive: Callable[[ModelStore, Path], Path], tmp_path: Path
) -> tuple[Path, ModelStore]:
    """A data directory whose chat model has a version 2 imported from a file derived from version 1."""
    data_dir = make_data_dir(name)
    store = ModelStore(data_dir / "models")
    cli_ok(data_dir, "models", "import", str(derive(store, tmp_path / f"{name}.gguf")), "--name", CHAT_MODEL)
    return data_dir, store


def test_deploy_and_rollback_under_streaming_load_fail_nothing(
    make_data_dir: Callable[..., Path], tmp_path: Path
) -> None:
    data_dir, _ = with_version_2(make_data_dir, "deploy", tuned_copy, tmp_path)
    with running_server(data_dir, {"MOLTBOT_PARALLEL": "4"}) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        load = StreamingLoad(server)
        threads = [threading.Thread(target=load.run) for _ in range(CLIENTS)]
        with server.client(timeout=300) as admin:
            listed = versions(admin)
            assert listed[1]["active"] and listed[1]["load_state"] == "loaded"
            assert not listed[2]["active"] and listed[2]["load_state"] == "on_disk"
            for thread in threads:
                thread.start()
            try:
                time.sleep(2)
                deployed = admin.post(f"/v1/admin/models/{CHAT_MODEL}/deploy", json={"version": 2})
                assert deployed.status_code == 200, deployed.text
                reply = deployed.json()
                assert reply["version"] == 2 and reply["previous_version"] == 1 and not reply["unchanged"]
                switched = time.monotonic()
                time.sleep(2)
                listed = versions(admin)
                assert listed[2]["active"] and listed[2]["load_state"] == "loaded"
                wait_unloaded(admin, 1)
                rolled = admin.post(f"/v1/admin/models/{CHAT_MODEL}/rollback")
                assert rolled.status_code == 200, rolled.text
                assert rolled.json()["version"] == 1 and rolled.json()["previous_version"] == 2
                time.sleep(2)
            finally:
                load.stop.set()
                for thread in threads:
                    thread.join(120)
            assert load.failures == []
            assert sum(1 for t in load.done if t > switched) >= CLIENTS
            assert versions(admin)[1]["active"]
            again = admin.post(f"/v1/admin/models/{CHAT_MODEL}/deploy", json={"version": 1})
            assert again.json()["unchanged"] is True
            metrics = admin.get("/metrics").text
            assert f'moltbot_model_load_successes_total{{model="{CHAT_MODEL}",version="2"}} 1.0' in metrics

            missing = admin.post(f"/v1/admin/models/{CHAT_MODEL}/deploy", json={"version": 42})
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
            unknown = admin.post("/v1/admin/models/nope/rollback")
            assert unknown.status_code == 404
            bad = admin.post(f"/v1/admin/models/{CHAT_MODEL}/deploy", json={"version": "two", "extra": 1})
            assert bad.status_code == 400
            audit = admin.get("/v1/admin/audit").json()["data"]
            assert {"model.deploy", "model.rollback"} <= {entry["action"] for entry in audit}
        # The CLI goes through the same API.
        env = {"MOLTBOT_API_KEY": server.admin_key}
        out = cli_ok(data_dir, "models", "deploy", CHAT_MODEL, "2", "--url", server.base_url, env=env)
        assert "now serving version 2 (was 1)" in out
    assert ModelStore(data_dir / "models").active(CHAT_MODEL) == 2  # the next start serves it too


def unloadable_copy(store: ModelStore, target: Path) -> Path:
    """The chat model with its architecture renamed: a well-formed GGUF that llama.cpp cannot load."""
    data = store.source(CHAT_MODEL).path.read_bytes()
    name = b"general.architecture"
    at = data.index(name) + len(name) + 4 + 8  # the key, then its value type (uint32) and length (uint64)
    assert data[at : at + 6] == b"gemma3"
    target.write_bytes(data[:at] + b"nomod3" + data[at + 6 :])
    return target


def test_a_deploy_that_fails_to_load_leaves_the_serving_version(
    make_data_dir: Callable[..., Path], tmp_path: Path
) -> None:
    data_dir, store = with_version_2(make_data_dir, "deploy-fail", unloadable_copy, tmp_path)
    body = {"model": CHAT_MODEL, "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
    with running_server(data_dir) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        with server.client(timeout=300) as admin:
            before = admin.post("/v1/completions", json=body)
            failed = admin.post(f"/v1/admin/models/{CHAT_MODEL}/deploy", json={"version": 2})
            assert failed.status_code == 422, failed.text
            message = failed.json()["error"]["message"]
            assert "version 2" in message and "was not deployed" in message, message
            assert message.endswith("still serving version 1")
            assert str(data_dir) not in failed.text and "Traceback" not in failed.text
            listed = versions(admin)
            assert listed[1]["active"] and listed[1]["load_state"] == "loaded"
            assert not listed[2]["active"] and listed[2]["load_state"] == "on_disk"
            for number in (1, 2):
                on_disk = store.version(CHAT_MODEL, number)
                assert listed[number]["digest"] == on_disk.manifest and listed[number]["digest"].startswith("sha256:")
                assert listed[number]["size_bytes"] == on_disk.size_bytes > 200_000_000
            after = admin.post("/v1/completions", json=body)
            assert before.status_code == after.status_code == 200
            assert after.json()["choices"][0]["text"] == before.json()["choices"][0]["text"]
            metrics = admin.get("/metrics").text
            assert f'moltbot_model_load_failures_total{{model="{CHAT_MODEL}",version="2"}} 1.0' in metrics
    assert store.active(CHAT_MODEL) == 1


def test_encrypted_package_round_trip(make_data_dir: Callable[..., Path], registry: Registry, tmp_path: Path) -> None:
    maker, runner = make_data_dir("enc-maker"), make_data_dir("enc-runner")
    env = registry_env(registry)
    key_file = tmp_path / "package.key"
    out = cli_ok(maker, "models", "encrypt", CHAT_MODEL, "--key-id", "team-k1", "--export-key", str(key_file))
    assert f"as {CHAT_MODEL} version 2 under key team-k1" in out
    assert key_file.stat().st_mode & 0o777 == 0o600
    maker_store = ModelStore(maker / "models")
    encrypted = maker_store.version(CHAT_MODEL, 2)
    assert encrypted.key_id == "team-k1"
    assert not maker_store.files_path(encrypted).exists()  # only ciphertext blobs on disk
    cli_ok(maker, "models", "push", f"{CHAT_MODEL}:2", f"{registry.host}/secure/gemma:enc", env=env)

    # No plaintext layer bytes anywhere in the registry.
    plain = maker_store.manifest(maker_store.version(CHAT_MODEL, 1))["layers"]
    stored = b"".join(p.read_bytes() for p in registry.blob_paths())
    for layer in plain:
        data = maker_store.read_blob(layer["digest"])
        for at in (len(data) // 3, len(data) // 2, 2 * len(data) // 3):
            assert data[at : at + 48] not in stored, layer["annotations"]

    pulled = cli_ok(runner, "models", "pull", f"{registry.host}/secure/gemma:enc", "--name", "secret-gemma", env=env)
    assert "as secret-gemma version 1" in pulled
    runner_store = ModelStore(runner / "models")
    version = runner_store.version("secret-gemma", 1)
    assert version.key_id == "team-k1" and not runner_store.files_path(version).exists()
    with running_server(runner) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        with server.client(timeout=300) as client:
            # The key is not in this server's key store yet: the model does not load, and says why.
            assert "secret-gemma" not in {m["id"] for m in client.get("/v1/models").json()["data"]}
            failed = client.post("/v1/admin/models/secret-gemma/deploy", json={})
            assert failed.status_code == 422 and "not in this server's key store" in failed.json()["error"]["message"]
            short = tmp_path / "short.key"
            short.write_text(base64.b64encode(b"x" * 16).decode())
            assert "32 bytes" in cli_fails(runner, "models", "key", "import", "team-k1", str(short))
            wrong = tmp_path / "wrong.key"
            wrong.write_text(base64.b64encode(os.urandom(32)).decode())
            cli_ok(runner, "models", "key", "import", "team-k1", str(wrong))
            refused = client.post("/v1/admin/models/secret-gemma/deploy", json={})
            assert refused.status_code == 422 and "does not open this package" in refused.text
            assert "exists already" in cli_fails(runner, "models", "key", "import", "team-k1", str(key_file))
            cli_ok(runner, "models", "key", "import", "team-k1", str(key_file), "--force")
            deployed = client.post("/v1/admin/models/secret-gemma/deploy", json={})
            assert deployed.status_code == 200, deployed.text
            body = {"model": "secret-gemma", "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
            answer = client.post("/v1/completions", json=body)
            plain = client.post("/v1/completions", json={**body, "model": CHAT_MODEL})  # the same weights
            assert answer.status_code == 200 and plain.status_code == 200
            text = answer.json()["choices"][0]["text"]
            assert text.strip() and text == plain.json()["choices"][0]["text"]
    assert not list(Path("/dev/shm").glob("moltbot-decrypt-*"))  # noqa: S108 - wiped after the load


def test_delta_pull_of_an_encrypted_package_moves_only_the_changed_layer(
    make_data_dir: Callable[..., Path], registry: Registry, tmp_path: Path
) -> None:
    maker, runner = make_data_dir("enc-delta-maker"), make_data_dir("enc-delta-runner")
    env = registry_env(registry)
    store = ModelStore(maker / "models")
    cli_ok(maker, "models", "import", str(tuned_copy(store, tmp_path / "tuned.gguf")), "--name", CHAT_MODEL)
    for number, tag in ((1, "e1"), (2, "e2")):
        cli_ok(maker, "models", "encrypt", f"{CHAT_MODEL}:{number}", "--key-id", "k", "--name", "sealed")
        cli_ok(maker, "models", "push", f"sealed:{number}", f"{registry.host}/secure/delta:{tag}", env=env)
    one, two = (store.manifest(store.version("sealed", n))["layers"] for n in (1, 2))
    changed = [b for a, b in zip(one, two, strict=True) if a["digest"] != b["digest"]]
    assert [layer["annotations"]["org.moltbot.group"] for layer in changed] == ["block.3"]
    cli_ok(runner, "models", "pull", f"{registry.host}/secure/delta:e1", env=env)
    second = cli_ok(runner, "models", "pull", f"{registry.host}/secure/delta:e2", env=env)
    moved = moved_bytes(second)
    assert changed[0]["size"] <= moved <= changed[0]["size"] + 100_000, second
