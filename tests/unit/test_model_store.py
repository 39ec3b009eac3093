"""The model store: layers by tensor group, versions, pruning, garbage collection, encrypted packages."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from moltbot.models import layers
from moltbot.models.package import (
    ModelKeys,
    PackageKeyError,
    decrypt_version,
    encrypt_version,
    memory_dir,
    wipe,
)
from moltbot.models.store import (
    ModelFormat,
    ModelStore,
    StoreError,
    UnknownModelError,
    Version,
    build_manifest,
    check_relative_path,
)
from moltbot.storage.crypto import Vault
from moltbot.storage.database import open_database


def bert_dir(root: Path, seed: int = 0, change_block: int | None = None) -> Path:
    """A directory the store takes as a BERT encoder: config, tokenizer and real safetensors."""
    rng = np.random.default_rng(seed)
    tensors = {"embeddings.word_embeddings.weight": rng.standard_normal((64, 16), dtype=np.float32)}
    for block in range(3):
        tensors[f"encoder.layer.{block}.attention.self.query.weight"] = rng.standard_normal((16, 16), dtype=np.float32)
        tensors[f"encoder.layer.{block}.output.dense.weight"] = rng.standard_normal((16, 16), dtype=np.float32)
    tensors["pooler.dense.weight"] = rng.standard_normal((16, 16), dtype=np.float32)
    if change_block is not None:
        tensors[f"encoder.layer.{change_block}.output.dense.weight"] += 1.0
    root.mkdir(parents=True)
    save_file(tensors, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (root / "tokenizer.json").write_text("{}")
    return root


def test_safetensors_are_cut_by_tensor_group_and_rebuild_exactly(tmp_path: Path) -> None:
    model = bert_dir(tmp_path / "m")
    ranges = layers.plan(model, ["config.json", "model.safetensors"])
    groups = [r.group for r in ranges if r.path == "model.safetensors"]
    assert groups[0] == "header" and {"block.0", "block.1", "block.2", "embeddings", "head"} <= set(groups)
    data = (model / "model.safetensors").read_bytes()
    pieces = [data[r.offset : r.offset + r.size] for r in ranges if r.path == "model.safetensors"]
    assert b"".join(pieces) == data


def test_import_versions_share_unchanged_layers(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    first = store.import_path("enc", bert_dir(tmp_path / "a"))
    second = store.import_path("enc", bert_dir(tmp_path / "b", change_block=1), activate=False)
    assert (first.number, second.number, first.format) == (1, 2, ModelFormat.HF_BERT)
    one, two = store.manifest(first)["layers"], store.manifest(second)["layers"]
    changed = [b["annotations"]["org.moltbot.group"] for a, b in zip(one, two, strict=True) if a != b]
    assert changed == ["block.1"]
    assert store.active("enc") == 1 and store.previous("enc") is None
    assert (store.source("enc", 2).path / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()
    again = store.import_path("enc", tmp_path / "b")  # the same content is the same version
    assert again.number == 2 and store.active("enc") == 2 and store.previous("enc") == 1


def test_a_plain_version_is_stored_once(tmp_path: Path) -> None:
    """Layers live in the version's files (no second copy as blobs), are read back as ranges of them,
    and a second copy left by an older store is dropped by gc."""
    store = ModelStore(tmp_path / "store")
    version = store.import_path("enc", bert_dir(tmp_path / "a"))
    manifest = store.manifest(version)
    files_bytes = sum(p.stat().st_size for p in store.files_path(version).rglob("*") if p.is_file())
    blob_bytes = sum(p.stat().st_size for p in store.blobs.iterdir())
    assert blob_bytes < 4096 < files_bytes  # only the manifest and the config are blobs
    data = (tmp_path / "a" / "model.safetensors").read_bytes()
    rebuilt = b"".join(
        store.read_blob(x["digest"])
        for x in manifest["layers"]
        if x["annotations"]["org.moltbot.file"] == "model.safetensors"
    )
    assert rebuilt == data
    for layer in manifest["layers"]:
        found = store.locate(layer["digest"])
        assert found is not None and found.size == layer["size"] and found.path.is_relative_to(store.library)
    first = manifest["layers"][0]
    store.blob_path(first["digest"]).write_bytes(store.read_blob(first["digest"]))  # as an old store kept them
    assert store.gc() == first["size"] and not store.blob_path(first["digest"]).exists()
    assert store.has_blob(first["digest"])


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../b", ".git/config", "a//b", "", "a\\b", "x/" * 5 + "y"])
def test_paths_that_could_escape_are_refused(path: str) -> None:
    with pytest.raises(StoreError, match="refused file path"):
        check_relative_path(path)


def test_unknown_names_and_versions(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    with pytest.raises(UnknownModelError):
        store.version("absent")
    store.import_path("enc", bert_dir(tmp_path / "a"))
    with pytest.raises(UnknownModelError, match="version 7"):
        store.version("enc", 7)
    with pytest.raises(StoreError, match="invalid model name"):
        store.import_path("../up", tmp_path / "a")


def test_a_manifest_with_missing_blobs_installs_nothing(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    version = store.import_path("enc", bert_dir(tmp_path / "a"))
    manifest = store.manifest(version)
    victim = manifest["layers"][3]["digest"]
    manifest["layers"][3]["digest"] = "sha256:" + "0" * 64
    config = store.read_blob(manifest["config"]["digest"])
    body = build_manifest(manifest["config"]["digest"], len(config), manifest["layers"])
    with pytest.raises(StoreError, match="missing"):
        store.install("other", body, origin="test")
    assert "other" not in store.names()
    store.gc()
    assert store.has_blob(victim)  # still used by version 1 of enc
    assert not list(store.tmp.iterdir())


def test_prune_keeps_the_newest_and_the_active_and_gc_frees_blobs(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", keep=2)
    for seed in range(4):
        store.import_path("enc", bert_dir(tmp_path / f"m{seed}", seed=seed), activate=False)
    assert [v.number for v in store.versions("enc")] == [1, 3, 4]  # 1 is active
    before = len(list(store.blobs.iterdir()))
    store.remove("enc", 3)
    assert store.gc() > 0 and len(list(store.blobs.iterdir())) < before
    with pytest.raises(StoreError, match="is active"):
        store.remove("enc", 1)
    (store.tmp / "build-enc-left-by-a-crash").mkdir()
    store.gc()
    assert not list(store.tmp.iterdir())


def test_refuses_pickle_and_unknown_directories(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    model = bert_dir(tmp_path / "m")
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(StoreError, match="pickle weights are refused"):
        store.import_path("m", model)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hi")
    with pytest.raises(StoreError, match="not a supported model directory"):
        store.import_path("o", other)
    with pytest.raises(StoreError, match="not a GGUF file"):
        store.import_path("o", other / "notes.txt")


@pytest.fixture
def keys(tmp_path: Path) -> ModelKeys:
    vault = Vault(open_database(tmp_path / "db.sqlite"), tmp_path / "secrets" / "kek")
    return ModelKeys(tmp_path / "secrets" / "model-keys", vault)


def test_encrypted_packages_round_trip_and_keep_deltas(tmp_path: Path, keys: ModelKeys) -> None:
    store = ModelStore(tmp_path / "store")
    one = store.import_path("enc", bert_dir(tmp_path / "a"))
    two = store.import_path("enc", bert_dir(tmp_path / "b", change_block=2), activate=False)
    key = keys.create("k1")
    assert keys.get("k1") == key and (tmp_path / "secrets" / "model-keys" / "k1.key").read_bytes() != key
    sealed_one = encrypt_version(store, one, key, "k1", "enc-sealed")
    sealed_two = encrypt_version(store, two, key, "k1", "enc-sealed")
    digests_one = [x["digest"] for x in store.manifest(sealed_one)["layers"]]
    digests_two = [x["digest"] for x in store.manifest(sealed_two)["layers"]]
    assert sum(a != b for a, b in zip(digests_one, digests_two, strict=True)) == 1  # only block.2
    plain = {store.read_blob(x["digest"]) for x in store.manifest(one)["layers"] if x["size"] > 64}
    for digest in digests_one:
        blob = store.read_blob(digest)
        assert not any(p[16:80] in blob for p in plain)
    assert not store.files_path(sealed_one).exists()
    folder = decrypt_version(store, sealed_two, key)
    try:
        original = (tmp_path / "b" / "model.safetensors").read_bytes()
        assert hashlib.sha256((folder / "model.safetensors").read_bytes()).digest() == hashlib.sha256(original).digest()
        assert oct(folder.stat().st_mode & 0o777) == oct(0o700)
        assert oct((folder / "model.safetensors").stat().st_mode & 0o777) == oct(0o600)
        assert folder.parent == memory_dir()
    finally:
        wipe(folder)
    assert not folder.exists()
    with pytest.raises(PackageKeyError, match="does not open"):
        decrypt_version(store, sealed_one, bytes(32))
    with pytest.raises(PackageKeyError, match="not in this server's key store"):
        keys.get("k2")


def sealed_package(tmp_path: Path, keys: ModelKeys) -> tuple[ModelStore, Version, bytes]:
    """A store with an encrypted version (model "sealed") of a small BERT directory, and its key."""
    store = ModelStore(tmp_path / "store")
    one = store.import_path("enc", bert_dir(tmp_path / "a"))
    key = keys.create("k1")
    return store, encrypt_version(store, one, key, "k1", "sealed"), key


def test_a_reordered_encrypted_manifest_is_refused(tmp_path: Path, keys: ModelKeys) -> None:
    store, sealed, key = sealed_package(tmp_path, keys)
    manifest = store.manifest(sealed)
    manifest["layers"][2], manifest["layers"][3] = manifest["layers"][3], manifest["layers"][2]
    config = store.read_blob(manifest["config"]["digest"])
    forged = store.install(
        "forged", build_manifest(manifest["config"]["digest"], len(config), manifest["layers"]), origin="t"
    )
    with pytest.raises(StoreError, match="does not match its sealed layer list"):
        decrypt_version(store, forged, key)


def test_a_version_a_server_has_loaded_is_neither_pruned_nor_removed(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", keep=1)
    store.import_path("enc", bert_dir(tmp_path / "a"))
    pin = store.pin("enc", 1)
    store.import_path("enc", bert_dir(tmp_path / "b", seed=1))  # active: 2; 1 is past keep but loaded
    assert [v.number for v in store.versions("enc")] == [1, 2]
    with pytest.raises(StoreError, match="loaded by a running server"):
        store.remove("enc", 1)
    pin.release()
    store.import_path("enc", bert_dir(tmp_path / "c", seed=2))
    assert [v.number for v in store.versions("enc")] == [3]


def test_manifests_whose_sizes_do_not_add_up_are_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    version = store.import_path("enc", bert_dir(tmp_path / "a"))
    manifest = store.manifest(version)
    config_ref = manifest["config"]

    def refused(layers: list[dict[str, object]], match: str) -> None:
        with pytest.raises(StoreError, match=match):
            store.check_manifest(build_manifest(config_ref["digest"], config_ref["size"], layers))

    first = manifest["layers"][0]
    refused([*manifest["layers"], first], "do not add up")  # a layer listed twice
    refused([{**first, "size": 1.5}, *manifest["layers"][1:]], "invalid size")
    refused([{**first, "size": True}, *manifest["layers"][1:]], "invalid size")
    refused([first] * 10_001, "1 to 10000 layers")


def test_large_groups_are_cut_into_bounded_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers, "MAX_LAYER_BYTES", 1000)
    model = bert_dir(tmp_path / "m")
    ranges = layers.plan(model, ["model.safetensors"])
    assert max(r.size for r in ranges) <= 1000
    data = (model / "model.safetensors").read_bytes()
    assert b"".join(data[r.offset : r.offset + r.size] for r in ranges) == data
    store = ModelStore(tmp_path / "store")
    version = store.import_path("enc", model)
    assert (store.source("enc", version.number).path / "model.safetensors").read_bytes() == data


def test_an_encrypted_package_whose_public_config_lies_is_refused(tmp_path: Path, keys: ModelKeys) -> None:
    store, sealed, key = sealed_package(tmp_path, keys)
    manifest = store.manifest(sealed)
    public = store.config(manifest)
    public["files"] = list(reversed(public["files"]))
    body = json.dumps(public).encode()
    manifest["config"] = {**manifest["config"], "digest": store.put_blob(body), "size": len(body)}
    forged = store.install(
        "forged", build_manifest(manifest["config"]["digest"], len(body), manifest["layers"]), origin="t"
    )
    with pytest.raises(StoreError, match="public config does not match"):
        decrypt_version(store, forged, key)


def test_a_sharded_causal_lm_directory_is_imported_shard_by_shard(tmp_path: Path) -> None:
    root = tmp_path / "sharded"
    root.mkdir()
    rng = np.random.default_rng(3)
    index: dict[str, str] = {}
    for shard, blocks in (("model-00001-of-00002.safetensors", (0, 1)), ("model-00002-of-00002.safetensors", (2,))):
        tensors = {
            f"model.layers.{b}.mlp.up_proj.weight": rng.standard_normal((8, 8), dtype=np.float32) for b in blocks
        }
        save_file(tensors, str(root / shard))
        index.update(dict.fromkeys(tensors, shard))
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": index}))
    (root / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    store = ModelStore(tmp_path / "store")
    version = store.import_path("sharded", root)
    assert version.format is ModelFormat.HF_CAUSAL
    groups = [
        (x["annotations"]["org.moltbot.file"], x["annotations"]["org.moltbot.group"])
        for x in store.manifest(version)["layers"]
    ]
    assert ("model-00002-of-00002.safetensors", "block.2") in groups and (
        "model-00001-of-00002.safetensors",
        "block.1",
    ) in groups
    for name in (
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ):
        assert (store.source("sharded").path / name).read_bytes() == (root / name).read_bytes()


def test_decrypted_files_go_to_tmpfs_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mounts = tmp_path / "mounts"
    runtime = tmp_path / "run"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nproc /proc proc rw 0 0\ntmpfs {runtime} tmpfs rw 0 0\n")
    assert memory_dir(mounts) == runtime
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\n/dev/vdb {runtime} ext4 rw 0 0\n")
    with pytest.raises(StoreError, match="no writable tmpfs"):
        memory_dir(mounts)
