"""Encrypted model packages: every layer AES-256-GCM ciphertext, the manifest authenticated.

Scheme (version 1), with a 32-byte package key K:
- a layer with plaintext digest D is encrypted under key_D || nonce_D = HKDF-SHA256(K, info="moltbot
  layer v1" || D, 44 bytes), with D as associated data. Each derived key encrypts exactly one plaintext,
  so the fixed nonce is never reused with different data, and the same plaintext layer under the same K
  always gives the same ciphertext digest: delta updates keep working on encrypted packages.
- the config blob holds, sealed under HKDF(K, "moltbot config v1") with a random nonce and the key id
  as associated data, the real config (files and their digests) and, for every layer, its ciphertext
  digest, plaintext digest and size. Loading checks that the manifest's layers are exactly those, in
  order: a registry cannot swap, drop or reorder layers without the key.

What it protects: model weights at rest in the registry, in transit, and in the store's blobs, from
anyone without the package key (the key never leaves the server's key store, which is sealed by the
vault's KEK). What it does not: the weights are plaintext in memory (and, for llama.cpp, in a 0600
file on tmpfs while the model loads) on the server that runs them, so root on that machine or a
memory dump gets them; equal layers under the same key are recognisable as equal; file names, sizes
and the number of layers are visible.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from moltbot.models.store import (
    ANNOTATION_FILE,
    ANNOTATION_GROUP,
    ENCRYPTED_LAYER_MEDIA_TYPE,
    ModelStore,
    StoreError,
    Version,
    build_manifest,
    canonical_json,
    check_relative_path,
    layer_descriptor,
)
from moltbot.storage.crypto import Vault
from moltbot.storage.files import write_atomic

SCHEME = "moltbot-aes-256-gcm-hkdf-v1"
_KEY_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_KEY_BYTES = 32


class PackageKeyError(StoreError):
    """A package key that is missing, malformed, or does not open the package."""


def _derive(key: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


def _layer_cipher(key: bytes, plain_digest: str) -> tuple[AESGCM, bytes]:
    material = _derive(key, b"moltbot layer v1\x00" + plain_digest.encode(), 44)
    return AESGCM(material[:32]), material[32:]


class ModelKeys:
    """Package keys by id, each a file sealed by the vault (AES-256-GCM under a data key)."""

    def __init__(self, folder: Path, vault: Vault) -> None:
        self._folder = folder
        self._vault = vault

    def _path(self, key_id: str) -> Path:
        if not _KEY_ID.match(key_id):
            raise PackageKeyError(f"invalid key id {key_id!r}")
        return self._folder / f"{key_id}.key"

    def has(self, key_id: str) -> bool:
        return self._path(key_id).is_file()

    def get(self, key_id: str) -> bytes:
        path = self._path(key_id)
        if not path.is_file():
            raise PackageKeyError(
                f"the package key {key_id!r} is not in this server's key store (moltbot models key import)"
            )
        return self._vault.decrypt(path.read_bytes(), "model_keys", "key", key_id)

    def put(self, key_id: str, key: bytes, *, replace: bool = False) -> None:
        if len(key) != _KEY_BYTES:
            raise PackageKeyError("a package key is 32 bytes")
        if self.has(key_id) and not replace:
            raise PackageKeyError(f"the package key {key_id!r} exists already (replace it with --force)")
        self._folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self._path(key_id), self._vault.encrypt(key, "model_keys", "key", key_id), mode=0o600)

    def create(self, key_id: str) -> bytes:
        if self.has(key_id):
            raise PackageKeyError(f"the package key {key_id!r} exists already")
        key = secrets.token_bytes(_KEY_BYTES)
        self.put(key_id, key)
        return key


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def decode_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise PackageKeyError("a package key file holds the key in base64") from None
    if len(key) != _KEY_BYTES:
        raise PackageKeyError("a package key is 32 bytes")
    return key


def encrypt_version(store: ModelStore, version: Version, key: bytes, key_id: str, target: str) -> Version:
    """A new version of `target`: the layers of `version` encrypted, not activated."""
    with store.writing():  # `gc` must not take the new ciphertext blobs before the version refers to them
        return _encrypt(store, version, key, key_id, target)


def _encrypt(store: ModelStore, version: Version, key: bytes, key_id: str, target: str) -> Version:
    if version.key_id is not None:
        raise StoreError(f"version {version.number} of {version.name!r} is encrypted already")
    manifest = store.manifest(version)
    config = store.config(manifest)
    entries: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    for layer in manifest["layers"]:
        plain_digest = layer["digest"]
        cipher, nonce = _layer_cipher(key, plain_digest)
        sealed = cipher.encrypt(nonce, store.read_blob(plain_digest), plain_digest.encode())
        digest = store.put_blob(sealed)
        notes = layer["annotations"]
        entries.append(
            layer_descriptor(
                digest, len(sealed), notes[ANNOTATION_FILE], notes[ANNOTATION_GROUP], ENCRYPTED_LAYER_MEDIA_TYPE
            )
        )
        layers.append({"digest": digest, "plain": plain_digest, "size": int(layer["size"])})
    secret = canonical_json({"config": config, "layers": layers})
    nonce = secrets.token_bytes(12)
    sealed_config = AESGCM(_derive(key, b"moltbot config v1", 32)).encrypt(nonce, secret, key_id.encode())
    public = {
        "name": target,
        "format": config["format"],
        "files": [{"path": f["path"], "size": f["size"]} for f in config["files"]],
        "encryption": {"scheme": SCHEME, "key_id": key_id, "sealed": base64.b64encode(nonce + sealed_config).decode()},
    }
    config_bytes = canonical_json(public)
    manifest_bytes = build_manifest(store.put_blob(config_bytes), len(config_bytes), entries)
    origin = f"encrypt:{version.name}:{version.number}"
    return store.install(target, manifest_bytes, origin=origin, activate=False, key_id=key_id)


def _open_config(store: ModelStore, version: Version, key: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    manifest = store.manifest(version)
    public = store.config(manifest)
    encryption = public.get("encryption") or {}
    if encryption.get("scheme") != SCHEME:
        raise StoreError("unknown package encryption scheme")
    raw = base64.b64decode(encryption["sealed"])
    try:
        secret = AESGCM(_derive(key, b"moltbot config v1", 32)).decrypt(
            raw[:12], raw[12:], str(version.key_id).encode()
        )
    except InvalidTag:
        raise PackageKeyError(f"the key {version.key_id!r} does not open this package") from None
    opened = json.loads(secret)
    layers: list[dict[str, Any]] = opened["layers"]
    sealed_files = [(f["path"], f["size"]) for f in opened["config"]["files"]]
    if public.get("format") != opened["config"]["format"] or sealed_files != [
        (f["path"], f["size"]) for f in public["files"]
    ]:
        raise StoreError("the package's public config does not match its sealed one; refused")
    if [x["digest"] for x in manifest["layers"]] != [x["digest"] for x in layers]:
        raise StoreError("the package's manifest does not match its sealed layer list; refused")
    for layer, entry in zip(manifest["layers"], layers, strict=True):
        entry["file"] = check_relative_path(layer["annotations"][ANNOTATION_FILE])
    config: dict[str, Any] = opened["config"]
    return config, layers


def _memory_candidates() -> list[Path]:
    """Where decrypted files may go, in order of preference: /dev/shm, then $XDG_RUNTIME_DIR."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return [Path("/dev/shm"), *([Path(runtime)] if runtime else [])]  # noqa: S108 - our own 0700 folders


def memory_dir(mounts: Path = Path("/proc/self/mounts")) -> Path:
    """The writable tmpfs decrypted files go to (/dev/shm, else $XDG_RUNTIME_DIR): never a disk."""
    try:
        tmpfs = {line.split()[1] for line in mounts.read_text().splitlines() if line.split()[2:3] == ["tmpfs"]}
    except OSError:
        tmpfs = set()
    for candidate in _memory_candidates():
        if str(candidate) in tmpfs and os.access(candidate, os.W_OK):
            return candidate
    raise StoreError(
        "an encrypted model is decrypted into memory only, and no writable tmpfs was found (/dev/shm or "
        "$XDG_RUNTIME_DIR); mount one (in a container: --shm-size larger than the model)"
    )


def decrypt_version(store: ModelStore, version: Version, key: bytes) -> Path:
    """The version's files decrypted into a new 0700 folder on tmpfs (never a disk); the caller removes
    it with `wipe` once the model is loaded."""
    config, layers = _open_config(store, version, key)
    folder = Path(tempfile.mkdtemp(dir=memory_dir(), prefix="moltbot-decrypt-"))
    try:
        by_file: dict[str, list[dict[str, Any]]] = {}
        for layer in layers:
            by_file.setdefault(layer["file"], []).append(layer)
        for entry in config["files"]:
            relative = check_relative_path(entry["path"])
            out_path = folder / relative
            out_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            digest = hashlib.sha256()
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            with os.fdopen(os.open(out_path, flags, 0o600), "wb") as out:
                for layer in by_file.get(relative, []):
                    cipher, nonce = _layer_cipher(key, layer["plain"])
                    try:
                        plain = cipher.decrypt(nonce, store.read_blob(layer["digest"]), layer["plain"].encode())
                    except InvalidTag:
                        raise StoreError(f"layer {layer['digest']} failed its integrity check") from None
                    digest.update(plain)
                    out.write(plain)
            if "sha256:" + digest.hexdigest() != entry["digest"]:
                raise StoreError(f"file {relative} decrypted does not match its digest")
    except BaseException:
        wipe(folder)
        raise
    return folder


def sweep_decrypted(store_tmp: Path) -> int:
    """Remove decrypted folders a killed process left (on tmpfs; in the store's temp folder, where
    earlier builds decrypted when there was no tmpfs); how many."""
    removed = 0
    for base in (*_memory_candidates(), store_tmp):  # our own prefix, our own uid only
        for folder in base.glob("moltbot-decrypt-*") if base.is_dir() else ():
            if folder.is_dir() and folder.stat().st_uid == os.getuid():
                wipe(folder)
                removed += 1
    return removed


def wipe(folder: Path) -> None:
    """Remove decrypted files. On tmpfs unlinking frees the pages; a model still mapping them keeps
    its copy in memory until it is unloaded."""
    shutil.rmtree(folder, ignore_errors=True)
