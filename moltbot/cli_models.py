"""`moltbot models ...`: the model store, registries, encrypted packages, deploy and rollback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from moltbot import endpoint
from moltbot.errors import MoltbotError
from moltbot.models.registry import Progress, RegistryAuth, Transfer, pull, push
from moltbot.models.store import ModelStore, StoreError
from moltbot.settings import Settings
from moltbot.storage.crypto import CryptoError
from moltbot.storage.files import write_atomic

Table = Callable[[Sequence[Sequence[object]]], str]
Verify = Callable[[argparse.Namespace], Any]


def _out(text: str) -> None:
    print(text)  # noqa: T201


def _err(text: str) -> None:
    print(text, file=sys.stderr)  # noqa: T201


def _store(settings: Settings) -> ModelStore:
    return ModelStore(settings.models_dir, settings.model_versions_kept)


def _auth(settings: Settings) -> RegistryAuth:
    return RegistryAuth(
        settings.registry_username,
        settings.registry_password.get_secret_value(),
        settings.registry_ca_file,
        settings.registry_insecure_hosts,
    )


def _name_version(text: str) -> tuple[str, int | None]:
    name, _, version = text.partition(":")
    if version and not version.isdigit():
        raise StoreError(f"a version is a number: {text!r}")
    return name, int(version) if version else None


def _progress(label: str) -> Callable[[int, int], Progress]:
    def start(total: int, count: int) -> Progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"{label} {count} blobs", file=sys.stderr, leave=False)

        def advance(n: int) -> None:
            bar.update(n)
            if bar.n >= total:
                bar.close()

        return advance

    return start


def _summary(verb: str, result: Transfer) -> str:
    return (
        f"{verb} {result.bytes_moved / 1e6:.1f} MB ({result.bytes_moved} bytes) in {result.layers_moved} blobs, reused "
        f"{result.bytes_reused / 1e6:.1f} MB in {result.layers_reused} layers, {result.seconds:.2f} s"
    )


def _keys(settings: Settings) -> Any:
    from moltbot.models.package import ModelKeys
    from moltbot.storage.crypto import Vault
    from moltbot.storage.database import open_database

    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    vault = Vault(open_database(settings.database_path, settings.database_url), settings.kek_path)
    return ModelKeys(settings.model_keys_dir, vault)


def cmd_list(args: argparse.Namespace, table: Table) -> int:
    store = _store(Settings())
    rows: list[list[object]] = [["MODEL", "ACTIVE", "VERSIONS", "FORMAT", "SIZE (MB)", "ORIGIN"]]
    for name in store.names():
        versions = store.versions(name)
        active = store.active(name)
        current = next((v for v in versions if v.number == active), versions[-1] if versions else None)
        if current is None:
            continue
        numbers = ",".join(str(v.number) for v in versions)
        size = f"{current.size_bytes / 1e6:.1f}"
        rows.append([name, active or "-", numbers, current.format.value, size, current.origin])
    _out(table(rows) if len(rows) > 1 else "no models in the store yet (the bundled ones are placed on first start)")
    return 0


def cmd_versions(args: argparse.Namespace, table: Table) -> int:
    store = _store(Settings())
    active = store.active(args.name)
    versions = store.versions(args.name)
    if not versions:
        raise StoreError(f"the model {args.name!r} does not exist")
    rows: list[list[object]] = [["VERSION", "ACTIVE", "DIGEST", "SIZE (MB)", "ENCRYPTED", "CREATED", "ORIGIN"]]
    for v in versions:
        mark = "*" if v.number == active else ""
        rows.append([v.number, mark, v.manifest[:19], f"{v.size_bytes / 1e6:.1f}", v.key_id or "", v.created, v.origin])
    _out(table(rows))
    return 0


def cmd_import(args: argparse.Namespace, _: Table) -> int:
    path = Path(args.path)
    name = args.name or (path.stem if path.is_file() else path.name).lower()
    version = _store(Settings()).import_path(name, path, activate=args.activate)
    _out(f"imported {path.name} as {name} version {version.number} ({version.size_bytes / 1e6:.1f} MB)")
    return 0


def cmd_pull(args: argparse.Namespace, _: Table) -> int:
    settings = Settings()
    result = pull(_store(settings), args.reference, _auth(settings), name=args.name, progress=_progress("pull"))
    assert result.version is not None  # noqa: S101 - pull installs one
    _out(f"pulled {args.reference} as {result.version.name} version {result.version.number}")
    _out(_summary("downloaded", result))
    return 0


def cmd_push(args: argparse.Namespace, _: Table) -> int:
    settings = Settings()
    name, number = _name_version(args.model)
    result = push(_store(settings), name, number, args.reference, _auth(settings), progress=_progress("push"))
    assert result.version is not None  # noqa: S101 - push names one
    _out(f"pushed {name} version {result.version.number} to {args.reference} ({result.digest})")
    _out(_summary("uploaded", result))
    return 0


def cmd_rm(args: argparse.Namespace, _: Table) -> int:
    name, number = _name_version(args.model)
    store = _store(Settings())
    removed = store.remove(name, number)
    freed = store.gc()
    _out(f"removed {name} version(s) {', '.join(map(str, removed))}; {freed / 1e6:.1f} MB freed")
    return 0


def cmd_gc(_: argparse.Namespace, __: Table) -> int:
    store = _store(Settings())
    for name in store.names():
        store.prune(name)
    _out(f"{store.gc() / 1e6:.1f} MB freed")
    return 0


def cmd_encrypt(args: argparse.Namespace, _: Table) -> int:
    from moltbot.models.package import encode_key, encrypt_version

    settings = Settings()
    name, number = _name_version(args.model)
    store, keys = _store(settings), _keys(settings)
    created = not keys.has(args.key_id)
    key = keys.create(args.key_id) if created else keys.get(args.key_id)
    version = encrypt_version(store, store.version(name, number), key, args.key_id, args.name or name)
    _out(f"encrypted {name} as {version.name} version {version.number} under key {args.key_id}")
    if created:
        _out(f"a new package key {args.key_id!r} is in this data directory's key store")
    if args.export_key:
        _write_key(Path(args.export_key), encode_key(key))
        _out(f"key written to {args.export_key} (0600): import it on the servers that run this package")
    return 0


def _write_key(path: Path, text: str) -> None:
    write_atomic(path, (text + "\n").encode(), mode=0o600)


def cmd_key(args: argparse.Namespace, _: Table) -> int:
    from moltbot.models.package import decode_key, encode_key

    if args.key_action in ("import", "export") and not args.file:
        _err(f"error: `models key {args.key_action}` needs a key file")
        return 2
    keys = _keys(Settings())
    if args.key_action == "create":
        key = keys.create(args.key_id)
        if args.file:
            _write_key(Path(args.file), encode_key(key))
        _out(f"package key {args.key_id!r} created")
    elif args.key_action == "import":
        keys.put(args.key_id, decode_key(Path(args.file).read_text()), replace=args.force)
        _out(f"package key {args.key_id!r} imported")
    else:
        _write_key(Path(args.file), encode_key(keys.get(args.key_id)))
        _out(f"package key {args.key_id!r} written to {args.file} (0600)")
    return 0


def _api(args: argparse.Namespace, verify: Verify, path: str, body: dict[str, Any]) -> int:
    key = args.key or os.environ.get("MOLTBOT_API_KEY")
    if not key:
        _err("an admin API key is needed: --key or MOLTBOT_API_KEY")
        return 2
    try:
        response = httpx.post(
            endpoint.api_base(args.url or endpoint.default_url(Settings())) + path,
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=900,
            verify=verify(args),
        )
    except httpx.HTTPError as exc:
        _err(f"cannot reach the server: {exc}")
        return 1
    try:
        reply = response.json()
    except ValueError:
        _err(f"error {response.status_code}: the server's answer is not JSON")
        return 1
    if response.status_code != 200:
        _err(f"error {response.status_code}: {reply.get('error', {}).get('message', response.text)}")
        return 1
    if reply["unchanged"]:
        _out(f"{reply['model']} already serves version {reply['version']}")
    else:
        _out(
            f"{reply['model']}: now serving version {reply['version']} (was {reply['previous_version']}); "
            f"switched in {reply['switch_seconds']:.2f} s (load {reply['load_seconds']:.2f} s, "
            f"smoke test {reply['smoke_seconds']:.2f} s)"
        )
    return 0


def add_parser(sub: Any, table: Table, verify: Verify) -> None:
    models = sub.add_parser("models", help="the model store, registries, deploy").add_subparsers(
        dest="action", required=True
    )

    def command(name: str, text: str, func: Callable[[argparse.Namespace, Table], int]) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = models.add_parser(name, help=text)
        parser.set_defaults(func=lambda args: _guard(func, args, table))
        return parser

    command("list", "models in the store", cmd_list)
    command("versions", "versions of a model", cmd_versions).add_argument("name")
    imp = command("import", "add a GGUF file or HuggingFace directory as a new version", cmd_import)
    imp.add_argument("path")
    imp.add_argument("--name", help="model name (default: the file or directory name)")
    imp.add_argument("--activate", action="store_true", help="make it the version served at the next start")
    pul = command("pull", "fetch a package from an OCI registry (only the layers not in the store)", cmd_pull)
    pul.add_argument("reference", help="HOST[:PORT]/REPOSITORY[:TAG]")
    pul.add_argument("--name", help="model name (default: the repository's last part)")
    pus = command("push", "upload a version to an OCI registry", cmd_push)
    pus.add_argument("model", help="NAME[:VERSION] (default: the active version)")
    pus.add_argument("reference", help="HOST[:PORT]/REPOSITORY[:TAG]")
    command("rm", "remove a version, or a whole model", cmd_rm).add_argument("model", help="NAME[:VERSION]")
    command("gc", "remove old versions past the limit and unused blobs", cmd_gc)
    enc = command("encrypt", "make an encrypted package (a new version) from a version", cmd_encrypt)
    enc.add_argument("model", help="NAME[:VERSION]")
    enc.add_argument("--key-id", required=True, help="package key id (created when new)")
    enc.add_argument("--name", help="model name of the encrypted version (default: the same)")
    enc.add_argument("--export-key", help="also write the key (base64) to this file, 0600")
    key = command("key", "package keys: create, import, export", cmd_key)
    key.add_argument("key_action", choices=["create", "import", "export"])
    key.add_argument("key_id")
    key.add_argument("file", nargs="?", help="key file (base64)")
    key.add_argument("--force", action="store_true", help="import over an existing key of that id")
    for name, text in (
        ("deploy", "switch a running server to a version"),
        ("rollback", "return to the previous version"),
    ):
        parser = models.add_parser(name, help=text)
        parser.add_argument("name")
        if name == "deploy":
            parser.add_argument("version", nargs="?", type=int, help="default: the store's active version")
            parser.add_argument("--in-place", action="store_true", help="unload the serving version first")
        parser.add_argument("--url", help="the server's base URL, with or without /v1 (default: the running server's)")
        parser.add_argument("--key", help="admin API key (default: $MOLTBOT_API_KEY)")
        parser.add_argument("--cacert", help="CA file to verify the server (default: the data directory's local CA)")
        parser.set_defaults(func=lambda args, v=verify: _remote(args, v))


def _remote(args: argparse.Namespace, verify: Verify) -> int:
    if args.action == "deploy":
        body: dict[str, Any] = {"version": args.version, "in_place": args.in_place}
        return _api(args, verify, f"/admin/models/{args.name}/deploy", body)
    return _api(args, verify, f"/admin/models/{args.name}/rollback", {})


def _guard(func: Callable[[argparse.Namespace, Table], int], args: argparse.Namespace, table: Table) -> int:
    try:
        return func(args, table)
    except MoltbotError as exc:
        _err(f"error: {exc.message}")
        return 1
    except CryptoError as exc:
        _err(f"error: {exc}")
        return 1
    except OSError as exc:
        _err(f"error: {exc.strerror or exc}")
        return 1
