"""The model repository end to end: the CLI against a real OCI registry (CNCF distribution with
htpasswd auth and TLS), delta pulls, refusals, keep-3 pruning, and an interrupted pull."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from moltbot.models.bundled import BY_ID as BUNDLED
from moltbot.models.store import ModelStore
from tests.helpers import CHAT_MODEL, EMBEDDING_MODEL, bundled_gguf, run_cli
from tests.models import layer_ranges, tuned_copy
from tests.registry import Registry, registry_env, registry_server

MODEL = CHAT_MODEL


def cli_ok(data_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = run_cli(data_dir, *args, env=env, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def cli_fails(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = run_cli(data_dir, *args, env=env, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


def moved_bytes(output: str) -> float:
    line = next(x for x in output.splitlines() if x.startswith("downloaded"))
    return float(line.split("(", 1)[1].split(" bytes)", 1)[0])


def test_push_pull_and_delta_pull_moves_only_the_changed_layer(
    make_data_dir: Callable[..., Path], registry: Registry, tmp_path: Path
) -> None:
    source_dir, target_dir = make_data_dir("push-src"), make_data_dir("pull-dst")
    env = registry_env(registry)
    source = ModelStore(source_dir / "models")
    changed = tuned_copy(source, tmp_path / "gemma-tuned.gguf")
    out = cli_ok(source_dir, "models", "import", str(changed), "--name", MODEL)
    assert f"as {MODEL} version 2" in out
    ref = f"{registry.host}/team/gemma"
    cli_ok(source_dir, "models", "push", f"{MODEL}:1", f"{ref}:v1", env=env)
    pushed = cli_ok(source_dir, "models", "push", f"{MODEL}:2", f"{ref}:v2", env=env)
    ranges_1, ranges_2 = layer_ranges(source, MODEL, 1), layer_ranges(source, MODEL, 2)
    differ = [g for g in ranges_2 if ranges_1[g][2] != ranges_2[g][2]]
    assert differ == ["block.3"], differ
    assert "uploaded 0.0 MB" not in pushed and "in 2 blobs" in pushed  # the changed layer and the config
    # No version named: the active one (1), not the newest (2).
    active = cli_ok(source_dir, "models", "push", MODEL, f"{ref}:active", env=env)
    assert f"pushed {MODEL} version 1 to {ref}:active" in active

    target = ModelStore(target_dir / "models")
    target.remove(MODEL)  # an empty store: the first pull moves everything
    target.gc()
    first = cli_ok(target_dir, "models", "pull", f"{ref}:v1", "--name", "gemma", env=env)
    assert "as gemma version 1" in first
    assert moved_bytes(first) >= ranges_1["block.3"][1] * 10
    second = cli_ok(target_dir, "models", "pull", f"{ref}:v2", "--name", "gemma", env=env)
    assert "as gemma version 2" in second
    changed_size = ranges_2["block.3"][1]
    assert changed_size <= moved_bytes(second) <= changed_size + 100_000, second
    rebuilt = target.source("gemma", 2).path
    assert hashlib.sha256(rebuilt.read_bytes()).digest() == hashlib.sha256(changed.read_bytes()).digest()
    assert target.active("gemma") == 1  # a pull does not switch what is served; deploy does
    listed = cli_ok(target_dir, "models", "versions", "gemma")
    assert "pull:" in listed and listed.count("\n") == 3


def test_keep_three_versions_and_gc(make_data_dir: Callable[..., Path], tmp_path: Path) -> None:
    data_dir = make_data_dir("keep3")
    store = ModelStore(data_dir / "models")
    groups = ["block.1", "block.2", "block.4", "block.5"]
    for index, group in enumerate(groups):
        changed = tuned_copy(store, tmp_path / f"v{index + 2}.gguf", (group,))
        cli_ok(data_dir, "models", "import", str(changed), "--name", MODEL)
    # Versions 2..5 were added; the newest three and the active one (1) remain.
    assert [v.number for v in store.versions(MODEL)] == [1, 3, 4, 5]
    blobs_before = len(list(store.blobs.iterdir()))
    out = cli_ok(data_dir, "models", "rm", f"{MODEL}:3")
    assert "removed" in out and len(list(store.blobs.iterdir())) < blobs_before
    assert "is active" in cli_fails(data_dir, "models", "rm", f"{MODEL}:1")
    assert "does not exist" in cli_fails(data_dir, "models", "rm", f"{MODEL}:9")
    # What is left still rebuilds to its digests.
    for version in store.versions(MODEL):
        path = store.source(MODEL, version.number).path
        config = store.config(store.manifest(version))
        assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == config["files"][0]["digest"]


def test_bad_input_is_refused_and_nothing_is_half_installed(
    make_data_dir: Callable[..., Path], registry: Registry, tmp_path: Path
) -> None:
    data_dir = make_data_dir("refusals")
    store = ModelStore(data_dir / "models")
    good = bundled_gguf(data_dir / "models").read_bytes()
    truncated = tmp_path / "short.gguf"
    truncated.write_bytes(good[: len(good) // 2])
    assert "lies outside the file" in cli_fails(data_dir, "models", "import", str(truncated))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    assert "pickle weights are refused" in cli_fails(data_dir, "models", "import", str(pickled))
    assert "invalid model name" in cli_fails(data_dir, "models", "import", str(truncated), "--name", "../x")

    env = registry_env(registry)
    assert "refused the credentials" in cli_fails(
        data_dir, "models", "pull", f"{registry.host}/team/gemma:v1", env={**env, "MOLTBOT_REGISTRY_PASSWORD": "no"}
    )
    assert "cannot reach the registry" in cli_fails(data_dir, "models", "pull", "127.0.0.1:9/team/gemma:v1", env=env)
    assert "does not exist in the registry" in cli_fails(
        data_dir, "models", "pull", f"{registry.host}/team/absent:v1", env=env
    )
    assert "invalid registry reference" in cli_fails(data_dir, "models", "pull", "not a reference", env=env)
    assert store.names() == sorted(BUNDLED)  # the shipped models only: nothing half-installed


def push_raw(reg: Registry, repository: str, tag: str, config: dict[str, Any], layer: bytes) -> None:
    """A hand-made manifest pushed with plain HTTP calls (what a hostile registry could serve)."""
    with reg.client() as client:
        blobs = {}
        for data in (json.dumps(config).encode(), layer):
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            start = client.post(f"/v2/{repository}/blobs/uploads/")
            url = httpx.URL(start.headers["location"]).copy_merge_params({"digest": digest})
            assert client.put(url, content=data).status_code == 201
            blobs[data] = digest
        config_bytes = json.dumps(config).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.moltbot.model.v1",
            "config": {
                "mediaType": "application/vnd.moltbot.model.config.v1+json",
                "digest": blobs[config_bytes],
                "size": len(config_bytes),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.moltbot.model.layer.v1",
                    "digest": blobs[layer],
                    "size": len(layer),
                    "annotations": {"org.moltbot.file": config["files"][0]["path"], "org.moltbot.group": "file"},
                }
            ],
        }
        headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        assert client.put(f"/v2/{repository}/manifests/{tag}", json=manifest, headers=headers).status_code == 201


def test_manifest_paths_cannot_escape_the_store(make_data_dir: Callable[..., Path], registry: Registry) -> None:
    data_dir = make_data_dir("escape")
    layer = b"pwned\n"
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    for index, path in enumerate(["../../escaped.txt", "/tmp/escaped.txt", "a/../../b", ".hidden"]):  # noqa: S108
        config = {"name": "evil", "format": "gguf", "files": [{"path": path, "size": 6, "digest": digest}]}
        push_raw(registry, "team/evil", f"t{index}", config, layer)
        error = cli_fails(data_dir, "models", "pull", f"{registry.host}/team/evil:t{index}", env=registry_env(registry))
        assert "refused file path" in error
    assert not (data_dir / "escaped.txt").exists() and not Path("/tmp/escaped.txt").exists()  # noqa: S108
    assert "evil" not in ModelStore(data_dir / "models").names()


def test_a_layer_that_does_not_match_its_digest_is_refused(
    make_data_dir: Callable[..., Path], registry: Registry
) -> None:
    source_dir, target_dir = make_data_dir("tamper-src"), make_data_dir("tamper-dst")
    env = registry_env(registry)
    source = ModelStore(source_dir / "models")
    cli_ok(source_dir, "models", "push", MODEL, f"{registry.host}/team/tamper:v1", env=env)
    victim = layer_ranges(source, MODEL, 1)["block.7"][2].removeprefix("sha256:")
    stored = next(p for p in registry.blob_paths() if p.parent.name == victim)
    original = stored.read_bytes()
    data = bytearray(original)
    data[1000] ^= 0xFF
    stored.write_bytes(bytes(data))
    target = ModelStore(target_dir / "models")
    target.remove(MODEL)  # so that no layer is reused: every blob comes from the registry
    target.gc()
    try:
        args = ("models", "pull", f"{registry.host}/team/tamper:v1", "--name", "tamper")
        error = cli_fails(target_dir, *args, env=env)
    finally:
        stored.write_bytes(original)  # the registry's blobs are shared by every repository in it
    assert "does not match its digest" in error
    assert "tamper" not in target.names()
    assert not any(p.name.startswith(victim) for p in target.blobs.iterdir())


def bytes_in(paths: Iterator[Path]) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):  # renamed from the partials meanwhile
            total += path.stat().st_size
    return total


def test_killed_pull_leaves_the_store_consistent_and_resumes(
    make_data_dir: Callable[..., Path], registry: Registry
) -> None:
    source_dir, target_dir = make_data_dir("kill-src"), make_data_dir("kill-dst")
    env = registry_env(registry)
    cli_ok(source_dir, "models", "push", MODEL, f"{registry.host}/team/killed:v1", env=env)
    target = ModelStore(target_dir / "models")
    target.remove(MODEL)
    target.gc()
    args = [sys.executable, "-m", "moltbot", "models", "pull", f"{registry.host}/team/killed:v1"]
    child_env = {**os.environ, "MOLTBOT_DATA_DIR": str(target_dir), **env}
    killed_at = 0
    baseline = bytes_in(target.blobs.iterdir())  # the embedding model's
    for _attempt in range(3):  # the pull may finish before it is caught midway on a fast machine
        with subprocess.Popen(args, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and child.poll() is None:
                downloaded = bytes_in(target.blobs.iterdir()) + bytes_in(target.tmp.glob("*.partial")) - baseline
                if downloaded > 60_000_000:
                    child.send_signal(signal.SIGKILL)
                    killed_at = downloaded
                    break
                time.sleep(0.005)
            child.wait(30)
        if killed_at:
            break
        target.remove("killed")
        target.gc(max_partial_age_s=0)
    assert killed_at, "the pull finished before it could be killed"
    assert "killed" not in target.names()  # no version until every blob is in and verified
    resumed = cli_ok(target_dir, "models", "pull", f"{registry.host}/team/killed:v1", env=env)
    assert "as killed version 1" in resumed
    total = ModelStore(source_dir / "models").version(MODEL).size_bytes
    assert moved_bytes(resumed) <= total - killed_at + 2_000_000
    assert target.source("killed").path.stat().st_size > 0
    assert not list(target.tmp.glob("*.partial"))  # every partial blob was resumed and committed


def test_plain_http_only_for_registries_named_insecure(make_data_dir: Callable[..., Path], tmp_path: Path) -> None:
    source_dir, target_dir = make_data_dir("plain-src"), make_data_dir("plain-dst")
    with registry_server(tmp_path / "plain", auth=False, tls=False) as plain:
        ref = f"{plain.host}/team/minilm:v1"
        named = registry_env(plain)
        assert named["MOLTBOT_REGISTRY_INSECURE"] == plain.host
        refused = cli_fails(
            source_dir, "models", "push", EMBEDDING_MODEL, ref, env={**named, "MOLTBOT_REGISTRY_INSECURE": ""}
        )
        assert "TLS handshake with the registry" in refused and "MOLTBOT_REGISTRY_INSECURE" in refused, refused
        other = cli_fails(
            source_dir,
            "models",
            "push",
            EMBEDDING_MODEL,
            ref,
            env={**named, "MOLTBOT_REGISTRY_INSECURE": "127.0.0.1:1"},
        )
        assert "TLS handshake with the registry" in other, other
        assert not plain.blob_paths()
        cli_ok(source_dir, "models", "push", EMBEDDING_MODEL, ref, env=named)
        pulled = cli_ok(target_dir, "models", "pull", ref, "--name", "minilm", env=named)
        assert "as minilm version 1" in pulled
    source = ModelStore(source_dir / "models")
    target = ModelStore(target_dir / "models")
    assert target.version("minilm", 1).size_bytes == source.version(EMBEDDING_MODEL).size_bytes
