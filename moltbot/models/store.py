"""The model store: content-addressed blobs, OCI manifests, numbered versions and an active pointer.

Layout under `<data>/models/`:

    blobs/sha256/<hex>             manifests, configs, encrypted layers and layers not yet in a version
    library/<name>/<n>/version.json the version: its manifest digest, format, where it came from
    library/<name>/<n>/files/...    the files rebuilt from the layers (not for encrypted versions)
    library/<name>/active           the version served (a number)
    library/<name>/history          versions activated, oldest first (for rollback)
    .tmp/                           partial downloads (resumed) and versions being assembled
    .lock                           one writer at a time across processes (flock)

Every write is a temp file, fsync and rename; a version directory appears whole or not at all, so a
process killed midway leaves nothing half-installed (only temp files, removed by `gc`).

A plain (unencrypted) version's files are the concatenation of its layers, so once they are built the
layer blobs are dropped: a layer is then read as a byte range of the file that holds it (`locate`). A
model costs its size on disk once, as in Ollama's store, while pulls still move only the layers no
version holds and pushes still send each layer as its own blob.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from moltbot.errors import MoltbotError
from moltbot.formats import MalformedModelError
from moltbot.formats.detect import PICKLE_SUFFIXES, is_bert_dir, is_causal_lm_dir
from moltbot.formats.gguf import validate_gguf
from moltbot.models import layers
from moltbot.storage.files import fsync_dir, write_atomic

log = logging.getLogger(__name__)

DEFAULT_KEEP = 3

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.moltbot.model.v1"
CONFIG_MEDIA_TYPE = "application/vnd.moltbot.model.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.moltbot.model.layer.v1"
ENCRYPTED_LAYER_MEDIA_TYPE = "application/vnd.moltbot.model.layer.v1+aes256gcm"
ANNOTATION_FILE = "org.moltbot.file"
ANNOTATION_GROUP = "org.moltbot.group"

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHUNK = 1 << 20
_MAX_LAYERS = 10_000
_MAX_SIZE = 1 << 42


class ModelFormat(enum.StrEnum):
    GGUF = "gguf"
    HF_BERT = "hf-bert"
    HF_CAUSAL = "hf-causal"


class StoreError(MoltbotError):
    """A model store operation that cannot be done (bad input, missing or damaged data)."""


class UnknownModelError(StoreError):
    """No such model or version in the store."""


@dataclass(slots=True, frozen=True)
class ModelSource:
    """A model version on disk, not yet loaded. `key_id` is set for an encrypted version, whose
    files exist only as ciphertext blobs."""

    id: str
    path: Path
    format: ModelFormat
    version: str = ""
    digest: str = ""
    size_bytes: int = 0
    key_id: str | None = None


@dataclass(slots=True, frozen=True)
class Version:
    name: str
    number: int
    manifest: str  # digest of the manifest blob
    format: ModelFormat
    size_bytes: int  # the layers' bytes
    created: str
    origin: str
    key_id: str | None = None
    files: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.number,
            "manifest": self.manifest,
            "format": self.format.value,
            "size_bytes": self.size_bytes,
            "created": self.created,
            "origin": self.origin,
            "key_id": self.key_id,
            "files": list(self.files),
        }


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise StoreError(f"invalid model name {name!r}: lowercase letters, digits, '.', '_' and '-', up to 64")
    return name


def check_relative_path(path: str) -> str:
    """A file path from a manifest or a directory: relative, no '..', no hidden or odd components."""
    parts = path.split("/")
    if not path or len(path) > 512 or len(parts) > 4 or not all(_COMPONENT.match(p) for p in parts):
        raise StoreError(f"refused file path {path!r} in a model: only plain relative names are allowed")
    return path


def check_digest(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise StoreError(f"invalid digest {digest!r}")
    return digest


def sha256_file(path: Path, offset: int = 0, size: int | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(offset)
        left = size if size is not None else -1
        while left != 0:
            chunk = handle.read(_CHUNK if left < 0 else min(_CHUNK, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk) if left > 0 else 0
    return "sha256:" + digest.hexdigest()


@dataclass(slots=True, frozen=True)
class BlobRange:
    """Where a blob's bytes are: a whole blob file, or `size` bytes at `offset` of a version's file."""

    path: Path
    offset: int
    size: int

    def chunks(self) -> Iterator[bytes]:
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            left = self.size
            while left > 0:
                chunk = handle.read(min(_CHUNK, left))
                if not chunk:
                    raise StoreError("a model file is shorter than its layers")
                left -= len(chunk)
                yield chunk

    def read(self) -> bytes:
        return b"".join(self.chunks())


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


class Pin:
    """A loaded version's hold on its directory."""

    def __init__(self, handle: TextIO) -> None:
        self._handle: TextIO | None = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class ModelStore:
    """Blobs, manifests and versions of every model; safe for several processes (one writer at a time)."""

    def __init__(self, root: Path, keep: int = DEFAULT_KEEP) -> None:
        self.root = root
        self.keep = max(1, keep)
        self._held = threading.local()
        self.blobs = root / "blobs" / "sha256"
        self.library = root / "library"
        self.tmp = root / ".tmp"
        for path in (self.blobs, self.library, self.tmp):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- locking ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The store's write lock (re-entrant within a thread: flock on a second descriptor would wait
        for the first)."""
        depth = getattr(self._held, "depth", 0)
        if depth:
            self._held.depth = depth + 1
            try:
                yield
            finally:
                self._held.depth = depth
            return
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Held (shared) by a pull or import from its first blob to its version: `gc` (exclusive) waits
        for it rather than removing blobs no version references yet."""
        with (self.root / ".gc.lock").open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def pin(self, name: str, number: int) -> Pin:
        """Keep a version from being pruned or removed while a server has it loaded (shared flock on its
        pin file; released by `Pin.release` or when the process ends)."""
        folder = self.library / check_name(name) / str(number)
        handle = (folder / ".pin").open("a")
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        return Pin(handle)

    @staticmethod
    def _pinned(folder: Path) -> bool:
        try:
            handle = (folder / ".pin").open("a")
        except OSError:
            return False
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return False

    # -- blobs -----------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / check_digest(digest).removeprefix("sha256:")

    def has_blob(self, digest: str) -> bool:
        return self.locate(digest) is not None

    def locate(self, digest: str, housed: dict[str, BlobRange] | None = None) -> BlobRange | None:
        """Where the bytes of a blob are (its own file, or a range of a plain version's file); None when
        the store does not have them. `housed` is a `housing()` computed once for many look-ups."""
        path = self.blob_path(digest)
        try:
            return BlobRange(path, 0, path.stat().st_size)
        except FileNotFoundError:
            pass
        return (self.housing() if housed is None else housed).get(digest)

    def housing(self) -> dict[str, BlobRange]:
        """The layers held in plain versions' files, by digest, each as its byte range."""
        housed: dict[str, BlobRange] = {}
        for name in self.names():
            for version in self.versions(name):
                if version.key_id is not None:
                    continue
                try:
                    layers = json.loads((self.blobs / version.manifest.removeprefix("sha256:")).read_bytes())["layers"]
                except (OSError, ValueError, KeyError, TypeError):
                    continue
                offsets: dict[str, int] = {}
                for layer in layers:
                    try:
                        relative = check_relative_path(str(layer["annotations"][ANNOTATION_FILE]))
                        size = int(layer["size"])
                    except (StoreError, KeyError, TypeError, ValueError):
                        break
                    offset = offsets.get(relative, 0)
                    offsets[relative] = offset + size
                    where = BlobRange(self.files_path(version) / relative, offset, size)
                    housed.setdefault(str(layer["digest"]), where)
        return housed

    def read_blob(self, digest: str) -> bytes:
        found = self.locate(check_digest(digest))
        if found is None:
            raise StoreError(f"blob {digest} is missing from the store")
        return found.read()

    def put_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has_blob(digest):
            write_atomic(self.blob_path(digest), data)
        return digest

    def partial_path(self, digest: str) -> Path:
        return self.tmp / (check_digest(digest).removeprefix("sha256:") + ".partial")

    def commit_partial(self, digest: str, size: int) -> None:
        """Move a fully downloaded partial file into the blobs, verifying its size and digest."""
        partial = self.partial_path(digest)
        actual = partial.stat().st_size
        if actual != size or sha256_file(partial) != digest:
            partial.unlink(missing_ok=True)
            raise StoreError(f"blob {digest} does not match its digest; refused")
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, self.blob_path(digest))
        fsync_dir(self.blobs)

    # -- versions --------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(p.name for p in self.library.iterdir() if p.is_dir() and _NAME.match(p.name))

    def versions(self, name: str) -> list[Version]:
        folder = self.library / check_name(name)
        found = []
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name.isdigit() and (entry / "version.json").is_file():
                    found.append(self._read_version(entry / "version.json"))
        return sorted(found, key=lambda v: v.number)

    def version(self, name: str, number: int | None = None) -> Version:
        """A version (the active one when `number` is None); raises UnknownModelError."""
        if number is None:
            number = self.active(name)
            if number is None:
                raise UnknownModelError(f"the model {name!r} does not exist")
        path = self.library / check_name(name) / str(number) / "version.json"
        if not path.is_file():
            known = bool(self.versions(name))
            what = f"version {number} of the model {name!r}" if known else f"the model {name!r}"
            raise UnknownModelError(f"{what} does not exist")
        return self._read_version(path)

    @staticmethod
    def _read_version(path: Path) -> Version:
        raw = json.loads(path.read_text())
        return Version(
            raw["name"],
            int(raw["version"]),
            raw["manifest"],
            ModelFormat(raw["format"]),
            int(raw["size_bytes"]),
            raw["created"],
            raw["origin"],
            raw.get("key_id"),
            tuple(raw.get("files", ())),
        )

    def active(self, name: str) -> int | None:
        try:
            return int((self.library / check_name(name) / "active").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def history(self, name: str) -> list[int]:
        try:
            text = (self.library / check_name(name) / "history").read_text()
        except FileNotFoundError:
            return []
        return [int(x) for x in text.split() if x.isdigit()]

    def set_active(self, name: str, number: int) -> None:
        """Point `name` at version `number` (which must exist) and record it in the history."""
        folder = self.library / name
        with self.locked():
            self.version(name, number)
            if self.active(name) == number:
                return
            history = [*[n for n in self.history(name) if n != number][-16:], number]
            write_atomic(folder / "active", f"{number}\n".encode())
            write_atomic(folder / "history", "\n".join(map(str, history)).encode() + b"\n")

    def previous(self, name: str) -> int | None:
        """The version active before the current one, if it is still in the store."""
        present = {v.number for v in self.versions(name)}
        current = self.active(name)
        for number in reversed(self.history(name)):
            if number != current and number in present:
                return number
        return None

    def files_path(self, version: Version) -> Path:
        return self.library / version.name / str(version.number) / "files"

    def source(self, name: str, number: int | None = None) -> ModelSource:
        version = self.version(name, number)
        files = self.files_path(version)
        gguf = next((f for f in version.files if f.endswith(".gguf")), "")
        path = files / gguf if version.format is ModelFormat.GGUF else files
        return ModelSource(
            name, path, version.format, str(version.number), version.manifest, version.size_bytes, version.key_id
        )

    def active_sources(self) -> list[ModelSource]:
        sources = []
        for name in self.names():
            if self.active(name) is not None:
                try:
                    sources.append(self.source(name))
                except (StoreError, OSError, ValueError, KeyError):
                    log.exception("model %s: its active version cannot be read", name)
        return sources

    # -- manifests -------------------------------------------------------------------------------

    def manifest(self, version: Version) -> dict[str, Any]:
        manifest: dict[str, Any] = json.loads(self.read_blob(version.manifest))
        return manifest

    def config(self, manifest: dict[str, Any]) -> dict[str, Any]:
        config: dict[str, Any] = json.loads(self.read_blob(manifest["config"]["digest"]))
        return config

    # -- import ----------------------------------------------------------------------------------

    def import_path(self, name: str, path: Path, *, origin: str = "", activate: bool = True) -> Version:
        """Add a GGUF file or a HuggingFace directory as the next version of `name`."""
        check_name(name)
        with self.writing():
            return self._import(name, path, origin, activate)

    def _import(self, name: str, path: Path, origin: str, activate: bool) -> Version:
        fmt, root, files = inspect_model(path)
        ranges = layers.plan(root, files)
        layer_entries = []
        # A file's layers are its bytes in order: hash the whole file as they are copied, not in a second read.
        file_hashes = {f: hashlib.sha256() for f in files}
        file_sizes = dict.fromkeys(files, 0)
        sources: dict[str, BlobRange] = {}
        for item in ranges:
            digest = _hash_range(root / item.path, item.offset, item.size, file_hashes[item.path])
            sources.setdefault(digest, BlobRange(root / item.path, item.offset, item.size))
            layer_entries.append(layer_descriptor(digest, item.size, item.path, item.group))
            file_sizes[item.path] += item.size
        config = {
            "name": name,
            "format": fmt.value,
            "files": [
                {"path": f, "size": file_sizes[f], "digest": "sha256:" + file_hashes[f].hexdigest()} for f in files
            ],
        }  # no timestamp: the same content gives the same manifest (the version records when)
        manifest_bytes = build_manifest(
            self.put_blob(canonical_json(config)), len(canonical_json(config)), layer_entries
        )
        # The layers are copied from the imported files straight into the version's files (which
        # are checked against the whole-file digests taken above): no blob copy in between.
        return self.install(
            name, manifest_bytes, origin=origin or f"import:{path.name}", activate=activate, sources=sources
        )

    def install(
        self,
        name: str,
        manifest_bytes: bytes,
        *,
        origin: str,
        activate: bool = True,
        key_id: str | None = None,
        sources: dict[str, BlobRange] | None = None,
    ) -> Version:
        """Add a version from a manifest whose blobs are all in the store (or in `sources`): verify,
        assemble, publish. A manifest identical to an existing version's returns that version."""
        check_name(name)
        manifest, config = self.check_manifest(manifest_bytes)
        manifest_digest = self.put_blob(manifest_bytes)
        for existing in self.versions(name):
            if existing.manifest == manifest_digest:
                if activate:
                    self.set_active(name, existing.number)
                return existing
        encryption = config.get("encryption")
        if encryption is not None and key_id is None:
            key_id = str(encryption.get("key_id", ""))
        fmt = ModelFormat(config["format"])
        files = [entry["path"] for entry in config["files"]]
        size = sum(int(layer["size"]) for layer in manifest["layers"])
        with self.locked():
            existing_numbers = [v.number for v in self.versions(name)]
            number = max(existing_numbers, default=0) + 1
            build = Path(tempfile.mkdtemp(dir=self.tmp, prefix=f"build-{name}-"))
            try:
                if encryption is None:
                    self._assemble(manifest, config, build / "files", sources or {})
                created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                version = Version(name, number, manifest_digest, fmt, size, created, origin, key_id, tuple(files))
                write_atomic(build / "version.json", json.dumps(version.to_json(), indent=1).encode())
                (self.library / name).mkdir(exist_ok=True, mode=0o700)
                os.rename(build, self.library / name / str(number))
                fsync_dir(self.library / name)
            except BaseException:
                shutil.rmtree(build, ignore_errors=True)
                raise
            if encryption is None:
                self._drop_housed(manifest)
        log.info("model %s: version %d installed (%s, %d bytes)", name, number, origin, size)
        if activate or self.active(name) is None:
            self.set_active(name, number)
        self.prune(name)
        return version

    def check_manifest(self, manifest_bytes: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
        """Parse and check a manifest and its config (blobs must be present); raises StoreError."""
        try:
            manifest = json.loads(manifest_bytes)
            if manifest.get("schemaVersion") != 2 or manifest.get("artifactType") != ARTIFACT_TYPE:
                raise StoreError("not a Moltbot model manifest")
            config_ref = manifest["config"]
            if config_ref.get("mediaType") != CONFIG_MEDIA_TYPE:
                raise StoreError("the manifest's config is not a Moltbot model config")
            config: dict[str, Any] = json.loads(self.read_blob(check_digest(config_ref["digest"])))
            fmt = ModelFormat(config["format"])
            encrypted = config.get("encryption") is not None
            if encrypted and not isinstance(config["encryption"], dict):
                raise StoreError("malformed encryption section")
            sizes: dict[str, int] = {}
            for entry in config["files"]:
                path = check_relative_path(str(entry["path"]))
                if path.lower().endswith((*PICKLE_SUFFIXES, ".py")):
                    raise StoreError(f"{path}: pickle weights and code are refused in a model package")
                if not encrypted:
                    check_digest(entry["digest"])
                sizes[path] = _size_field(entry["size"])
            if not sizes or len(sizes) != len(config["files"]):
                raise StoreError("the model lists no files, or a file twice")
            if fmt is ModelFormat.GGUF and sum(p.endswith(".gguf") for p in sizes) != 1:
                raise StoreError("a GGUF model holds exactly one .gguf file")
            if not 0 < len(manifest["layers"]) <= _MAX_LAYERS:
                raise StoreError(f"a model has 1 to {_MAX_LAYERS} layers")
            # The layers of a file add up to it (each ciphertext is its plaintext and a 16-byte tag).
            left = dict(sizes)
            for layer in manifest["layers"]:
                check_digest(layer["digest"])
                path = check_relative_path(str(layer["annotations"][ANNOTATION_FILE]))
                if path not in left:
                    raise StoreError("a layer names a file the model does not list")
                left[path] -= _size_field(layer["size"]) - (16 if encrypted else 0)
            if any(left.values()):
                raise StoreError("the layers of a file do not add up to its size")
        except StoreError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError("malformed model manifest") from exc
        return manifest, config

    def _assemble(
        self, manifest: dict[str, Any], config: dict[str, Any], target: Path, sources: dict[str, BlobRange]
    ) -> None:
        """Rebuild every file from its layers under `target` and check it against the config."""
        housed = self.housing()
        by_file: dict[str, list[dict[str, Any]]] = {}
        for layer in manifest["layers"]:
            by_file.setdefault(layer["annotations"][ANNOTATION_FILE], []).append(layer)
        for entry in config["files"]:
            relative = check_relative_path(entry["path"])
            out_path = target / relative
            out_path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            with os.fdopen(os.open(out_path, flags, 0o600), "wb") as out:
                for layer in by_file.get(relative, []):
                    found = sources.get(layer["digest"]) or self.locate(layer["digest"], housed)
                    if found is None or found.size != int(layer["size"]):
                        raise StoreError(f"layer {layer['digest']} is missing or has the wrong size")
                    for chunk in found.chunks():
                        out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if out_path.stat().st_size != int(entry["size"]) or sha256_file(out_path) != entry["digest"]:
                raise StoreError(f"file {relative} rebuilt from its layers does not match its digest")

    def _drop_housed(self, manifest: dict[str, Any]) -> None:
        """Remove the blob files of a plain version's layers: its files hold the same bytes now."""
        for layer in manifest["layers"]:
            self.blob_path(layer["digest"]).unlink(missing_ok=True)

    # -- removal ---------------------------------------------------------------------------------

    def remove(self, name: str, number: int | None = None) -> list[int]:
        """Remove one version (not the active one), or with `number` None every version of `name`."""
        with self.locked():
            versions = self.versions(name)
            if not versions:
                raise UnknownModelError(f"the model {name!r} does not exist")
            if number is None:
                if any(self._pinned(self.library / name / str(v.number)) for v in versions):
                    raise StoreError(f"the model {name!r} is loaded by a running server")
                shutil.rmtree(self.library / name)
                return [v.number for v in versions]
            self.version(name, number)
            if self.active(name) == number:
                raise StoreError(f"version {number} of {name!r} is active; deploy another version first")
            if self._pinned(self.library / name / str(number)):
                raise StoreError(f"version {number} of {name!r} is loaded by a running server")
            shutil.rmtree(self.library / name / str(number))
            return [number]

    def prune(self, name: str, protect: frozenset[int] = frozenset()) -> list[int]:
        """Keep the newest `keep` versions (the active one, `protect` and versions a server has loaded
        always); remove the rest."""
        removed = []
        with self.locked():
            versions = self.versions(name)
            active = self.active(name)
            kept = {v.number for v in versions[-self.keep :]} | protect | ({active} if active else set())
            for version in versions:
                folder = self.library / name / str(version.number)
                if version.number not in kept and not self._pinned(folder):
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(version.number)
        if removed:
            log.info("model %s: removed old versions %s (keeping %d)", name, removed, self.keep)
        return removed

    def gc(self, max_partial_age_s: float = 24 * 3600) -> int:
        """Remove blobs no version uses, builds left by a killed process, stale partials; bytes freed."""
        freed = 0
        with (self.root / ".gc.lock").open("a") as writers, self.locked():
            fcntl.flock(writers.fileno(), fcntl.LOCK_EX)  # no pull or import is between blobs and version
            referenced: set[str] = set()
            for name in self.names():
                for version in self.versions(name):
                    referenced.add(version.manifest)
                    try:
                        manifest = self.manifest(version)
                    except (StoreError, ValueError):
                        continue
                    referenced.add(manifest["config"]["digest"])
                    referenced.update(layer["digest"] for layer in manifest["layers"])
            housed = self.housing()  # a layer blob whose bytes a plain version's file holds is a second copy
            for blob in self.blobs.iterdir():
                digest = "sha256:" + blob.name
                if digest not in referenced or (digest in housed and housed[digest].path.is_file()):
                    freed += blob.stat().st_size
                    blob.unlink()
            now = time.time()
            for entry in self.tmp.iterdir():
                stale = now - entry.stat().st_mtime > max_partial_age_s
                done = entry.name.endswith(".partial") and (self.blobs / entry.name.removesuffix(".partial")).exists()
                if entry.name.startswith(("build-", "import-")) or stale or done:
                    freed += _size(entry)
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        return freed


def _size_field(value: object) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_SIZE:
        raise StoreError(f"invalid size {value!r} in a model manifest")
    return value


def layer_descriptor(
    digest: str, size: int, path: str, group: str, media_type: str = LAYER_MEDIA_TYPE
) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": digest,
        "size": size,
        "annotations": {ANNOTATION_FILE: path, ANNOTATION_GROUP: group},
    }


def build_manifest(config_digest: str, config_size: int, layer_entries: list[dict[str, Any]]) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
        "layers": layer_entries,
    }
    return json.dumps(manifest, indent=1).encode()


def inspect_model(path: Path) -> tuple[ModelFormat, Path, list[str]]:
    """The format, root and files of a GGUF file or a model directory; raises StoreError."""
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise StoreError(f"{path.name}: not a GGUF file (pickle and other formats are refused)")
        try:
            validate_gguf(path)
        except MalformedModelError as exc:
            raise StoreError(exc.message) from exc
        return ModelFormat.GGUF, path.parent, [path.name]
    if not path.is_dir():
        raise StoreError(f"{path.name}: no such file or directory")
    files = []
    for entry in sorted(path.rglob("*")):
        relative = entry.relative_to(path).as_posix()
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        if entry.suffix.lower() in PICKLE_SUFFIXES:
            raise StoreError(
                f"{relative}: pickle weights are refused (they can run code when loaded); convert the model "
                "to safetensors"
            )
        if entry.is_file() and entry.suffix != ".py":
            files.append(check_relative_path(relative))
    if is_bert_dir(path):
        return ModelFormat.HF_BERT, path, files
    if is_causal_lm_dir(path):
        return ModelFormat.HF_CAUSAL, path, files
    raise StoreError(f"{path.name}: not a supported model directory (config.json and *.safetensors expected)")


def _hash_range(path: Path, offset: int, size: int, file_hash: Any) -> str:
    """The digest of `size` bytes of a file from `offset` (the bytes also go into `file_hash`)."""
    hasher = hashlib.sha256()
    for chunk in BlobRange(path, offset, size).chunks():
        hasher.update(chunk)
        file_hash.update(chunk)
    return "sha256:" + hasher.hexdigest()


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- bundled models and the layout before the store ------------------------------------------------


def migrate_legacy(store: ModelStore) -> None:
    """Models placed directly in the models directory (before the store) become versions, once."""
    for entry in sorted(store.root.iterdir()):
        if entry.name.startswith(".") or entry.name in ("blobs", "library"):
            continue
        name = entry.stem.lower() if entry.is_file() else entry.name.lower()
        if not _NAME.match(name) or store.versions(name):
            continue
        try:
            store.import_path(name, entry, origin="migrated")
        except StoreError as exc:
            log.warning("%s in the models directory is not imported: %s", entry.name, exc.message)
            continue
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def external_source(path: Path) -> ModelSource | None:
    """MOLTBOT_MODEL_PATH: a GGUF file or model directory served in place, outside the store."""
    try:
        fmt, _root, _files = inspect_model(path)
    except StoreError as exc:
        log.error("MOLTBOT_MODEL_PATH is not served: %s", exc.message)
        return None
    stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y%m%dT%H%M%SZ")
    name = path.stem if path.is_file() else path.name
    return ModelSource(name, path, fmt, stamp, "", _size(path))
