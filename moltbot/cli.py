"""The `moltbot` command: serve, chat, models, pipeline, docs, keys, sessions, alerts, ca, doctor."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import json
import logging
import math
import os
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import uvicorn
from pydantic import ValidationError
from pythonjsonlogger.json import JsonFormatter
from sqlalchemy.engine import make_url

from moltbot import __version__, cli_documents, cli_models, cli_pipelines, endpoint, offline
from moltbot.app import build_services, create_app, ensure_admin_key
from moltbot.gateway import tls
from moltbot.logs import RedactSecrets
from moltbot.monitor.rules import RulesError, load_rules
from moltbot.resources import detect
from moltbot.sessions.export import export_document
from moltbot.settings import Runtime, Settings, resolve
from moltbot.storage.audit import AuditLog
from moltbot.storage.crypto import CryptoError, Vault
from moltbot.storage.database import open_database
from moltbot.storage.keys import DEFAULT_SCOPES, KeyStore, UnknownScopeError, parse_scopes
from moltbot.storage.schema import ENCRYPTED_COLUMNS, REENCRYPT_BATCH
from moltbot.storage.sessions import ANY_OWNER, Session, SessionRepository

log = logging.getLogger("moltbot")


def _runtime(**overrides: object) -> Runtime:
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    return resolve(settings, detect(settings.data_dir))


def _setup_logging(level: str, fmt: str = "text") -> None:
    """JSON lines (time, level, logger, message and any structured fields) or plain text, on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{name}{message}",
                style="{",
                timestamp="time",
                rename_fields={"levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())  # libraries log handshake headers at debug level
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _table(rows: Sequence[Sequence[object]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


# -- serve ---------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    runtime = _runtime(host=args.host, port=args.port)
    settings = runtime.settings
    _setup_logging(settings.log_level, settings.log_format)
    log.info("moltbot %s, profile %s", __version__, runtime.profile.name.value)
    log.info("effective settings: %s", json.dumps(runtime.describe(), sort_keys=True))
    if settings.offline:
        allowed = [*settings.offline_allow, *offline.hosts_of(settings.alert_webhooks), settings.host]
        if settings.database_url and (database_host := make_url(settings.database_url).host):
            allowed.append(database_host)
        offline.install(allowed)
        log.info("offline mode: outbound connections only to loopback and %s", ", ".join(allowed) or "nothing else")
    try:
        services = build_services(runtime)
    except (RulesError, CryptoError) as exc:
        print(f"cannot start: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    token = ensure_admin_key(services)
    if token is not None:
        print(f"Admin API key (shown once, store it now): {token}", flush=True)  # noqa: T201
    app = create_app(services)
    context: ssl.SSLContext | None = None
    if settings.tls:
        try:
            files = _tls_files(settings)
            context = tls.server_context(files)
        except (OSError, ValueError, ssl.SSLError) as exc:
            print(f"cannot start: the TLS certificate cannot be used ({exc})", file=sys.stderr)  # noqa: T201
            return 2
        _reload_on_sighup(context, files)
        if files.ca is not None:
            print(f"TLS 1.3 with the local CA {files.ca} (SHA-256 {tls.fingerprint(files.ca)});", flush=True)  # noqa: T201
            print("  `moltbot ca` shows how to trust it.", flush=True)  # noqa: T201
    elif not _is_loopback(settings.host):
        print(  # noqa: T201
            f"cannot start: plain HTTP (MOLTBOT_TLS=off) is only allowed on a loopback address, not {settings.host}; "
            "turn TLS on or bind 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=max(1, math.ceil(settings.drain_seconds)),
        proxy_headers=False,  # X-Forwarded-For is read by the gateway, and only from MOLTBOT_TRUSTED_PROXIES
        ssl_context_factory=None if context is None else (lambda _config, _default: context),
    )
    print(f"Moltbot listening on {settings.scheme}://{settings.host}:{settings.port}/v1", flush=True)  # noqa: T201
    recorded = endpoint.record(settings, endpoint.server_url(settings.scheme, settings.host, settings.port))
    try:
        uvicorn.Server(config).run()
    finally:
        endpoint.forget(recorded)
    return 0


def _tls_files(settings: Settings) -> tls.TlsFiles:
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        return tls.TlsFiles(settings.tls_cert_file, settings.tls_key_file)
    return tls.ensure_local_certificate(settings.tls_dir, tls.local_names(settings.tls_names))


def _reload_on_sighup(context: ssl.SSLContext, files: tls.TlsFiles) -> None:
    def reload(_signum: int, _frame: object) -> None:
        try:
            tls.reload(context, files)
            log.info("TLS certificate reloaded from %s", files.cert)
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS certificate reload failed, keeping the current one: %s", exc)

    signal.signal(signal.SIGHUP, reload)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _base_url(args: argparse.Namespace) -> str:
    """--url (with or without /v1), else the running server's recorded URL, else the configured one."""
    return endpoint.api_base(args.url or endpoint.default_url(Settings()))


def _verify(args: argparse.Namespace) -> ssl.SSLContext | bool:
    """How a CLI client checks the server: --cacert, else the local CA of the data directory, else the system's."""
    cafile = args.cacert or Settings().tls_dir / "ca.pem"
    if Path(cafile).is_file():
        return tls.client_context(Path(cafile))
    return True


# -- ca ------------------------------------------------------------------------------------------


def cmd_ca(_: argparse.Namespace) -> int:
    settings = Settings()
    if settings.tls_cert_file is not None:
        print(f"TLS uses the configured certificate {settings.tls_cert_file}; trust its issuer.")  # noqa: T201
        return 0
    files = tls.ensure_local_certificate(settings.tls_dir, tls.local_names(settings.tls_names))
    ca = files.ca
    assert ca is not None  # noqa: S101 - the local certificate always has a CA
    base = endpoint.api_base(endpoint.default_url(settings))
    print(  # noqa: T201
        f"""Moltbot's local certificate authority: {ca}
SHA-256 fingerprint: {tls.fingerprint(ca)}

Trust it for one client (not the whole machine):
  curl --cacert {ca} {base.removesuffix("/v1")}/healthz
  SSL_CERT_FILE={ca} <program>                      # Python's ssl, httpx, requests
  httpx.Client(verify=ssl.create_default_context(cafile="{ca}"))
  openai.OpenAI(base_url="{base}", api_key=KEY,
                http_client=httpx.Client(verify=ssl.create_default_context(cafile="{ca}")))
On another machine, copy ca.pem (never ca.key) and check the fingerprint above."""
    )
    return 0


# -- chat ----------------------------------------------------------------------------------------


def _stream_reply(client: httpx.Client, args: argparse.Namespace, history: list[dict[str, str]]) -> str:
    pieces: list[str] = []
    body = {
        "model": args.model,
        "messages": history,
        "stream": True,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
    }
    with client.stream("POST", "/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            message = response.json().get("error", {}).get("message", response.text)
            print(f"error {response.status_code}: {message}")  # noqa: T201
            return ""
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            for choice in event.get("choices", []):
                text = choice.get("delta", {}).get("content") or ""
                pieces.append(text)
                print(text, end="", flush=True)  # noqa: T201
    print()  # noqa: T201
    return "".join(pieces)


def _default_model(client: httpx.Client) -> str:
    """The server's default chat model (flagged in /v1/models), else its first text-generation model."""
    models = client.get("/models").raise_for_status().json().get("data", [])
    chat = [m for m in models if m.get("kind", "generate") == "generate"]
    chosen = next((m for m in chat if m.get("default")), chat[0] if chat else {"id": ""})
    return str(chosen["id"])


def cmd_chat(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get("MOLTBOT_API_KEY")
    if not key:
        print("an API key is needed: --key or MOLTBOT_API_KEY", file=sys.stderr)  # noqa: T201
        return 2
    history: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    headers = {"Authorization": f"Bearer {key}"}
    base = _base_url(args)
    with httpx.Client(base_url=base, headers=headers, timeout=300, verify=_verify(args)) as client:
        if args.model is None:
            try:
                args.model = _default_model(client)
            except httpx.HTTPError as exc:
                print(f"cannot reach the server: {exc}", file=sys.stderr)  # noqa: T201
                return 1
        print(f"Chatting with {args.model} at {base} (Ctrl-D to quit)")  # noqa: T201
        while True:
            try:
                line = input("> ").strip()
            except (EOFError, KeyboardInterrupt):
                print()  # noqa: T201
                return 0
            if not line:
                continue
            history.append({"role": "user", "content": line})
            try:
                answer = _stream_reply(client, args, history)
            except httpx.HTTPError as exc:
                print(f"cannot reach the server: {exc}", file=sys.stderr)  # noqa: T201
                return 1
            history.append({"role": "assistant", "content": answer})


# -- keys --------------------------------------------------------------------------------


def _keys() -> tuple[KeyStore, AuditLog]:
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    database = open_database(settings.database_path, settings.database_url)
    return KeyStore(database), AuditLog(database)


def _cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def cmd_keys_create(args: argparse.Namespace) -> int:
    try:
        scopes = parse_scopes(args.scopes) if args.scopes else DEFAULT_SCOPES
    except UnknownScopeError as exc:
        print(str(exc), file=sys.stderr)  # noqa: T201
        return 2
    expires = time.time() + args.expires_days * 86400 if args.expires_days else None
    keys, audit = _keys()
    key, token = keys.create(args.name, scopes, expires)
    audit.record(_cli_actor(), "key.create", key.id, name=key.name, scopes=sorted(s.value for s in scopes))
    print(f"created key {key.id} ({args.name}) with scopes {','.join(sorted(scopes))}")  # noqa: T201
    print(token)  # noqa: T201
    return 0


def cmd_keys_list(_: argparse.Namespace) -> int:
    now = time.time()
    rows: list[list[object]] = [["ID", "NAME", "SCOPES", "CREATED", "STATE"]]
    for k in _keys()[0].list():
        state = "active" if k.is_active(now) else ("revoked" if k.revoked_at else "expired")
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(k.created_at))
        rows.append([k.id, k.name, ",".join(sorted(k.scopes)), created, state])
    print(_table(rows))  # noqa: T201
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    keys, audit = _keys()
    if keys.revoke(args.id):
        audit.record(_cli_actor(), "key.revoke", args.id)
        print(f"revoked key {args.id}")  # noqa: T201
        return 0
    print(f"no active key {args.id}", file=sys.stderr)  # noqa: T201
    return 1


def _session_store() -> SessionRepository:
    settings = Settings()
    database = open_database(settings.database_path, settings.database_url)
    return SessionRepository(database, Vault(database, settings.kek_path))


def cmd_sessions_list(args: argparse.Namespace) -> int:
    found = _session_store().list(args.key_id or ANY_OWNER, args.limit)
    rows: list[list[object]] = [["ID", "KEY", "MODEL", "MESSAGES", "UPDATED", "TITLE"]]
    for s in found:
        updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated_at))
        rows.append([s.id, s.key_id, s.model, s.message_count, updated, (s.title or "")[:40]])
    print(_table(rows) if found else "no sessions")  # noqa: T201
    return 0


def _find_session(session_id: str) -> Session | None:
    session = _session_store().get(ANY_OWNER, session_id, with_messages=True)
    if session is None:
        print(f"no session {session_id}", file=sys.stderr)  # noqa: T201
    return session


def cmd_sessions_show(args: argparse.Namespace) -> int:
    session = _find_session(args.id)
    if session is None:
        return 1
    print(f"{session.id}  model {session.model}  key {session.key_id}  title {session.title or '-'}")  # noqa: T201
    if session.system_prompt:
        print(f"[system] {session.system_prompt}")  # noqa: T201
    for message in session.messages:
        marker = " (interrupted)" if message.status == "interrupted" else ""
        print(f"[{message.role}{marker}] {message.content}")  # noqa: T201
    return 0


def cmd_sessions_export(args: argparse.Namespace) -> int:
    session = _find_session(args.id)
    if session is None:
        return 1
    print(json.dumps(export_document(session), indent=2, ensure_ascii=False))  # noqa: T201
    return 0


def cmd_sessions_rm(args: argparse.Namespace) -> int:
    store = _session_store()
    if not store.delete(ANY_OWNER, args.id):
        print(f"no session {args.id}", file=sys.stderr)  # noqa: T201
        return 1
    _, audit = _keys()
    audit.record(_cli_actor(), "session.delete", args.id)
    print(f"deleted session {args.id}")  # noqa: T201
    return 0


def cmd_keys_rotate_kek(_: argparse.Namespace) -> int:
    settings = Settings()
    _store, audit = _keys()
    try:
        vault = Vault(open_database(settings.database_path, settings.database_url), settings.kek_path)
        old = vault.kek_id
        new = vault.rotate_kek()
    except CryptoError as exc:
        print(str(exc), file=sys.stderr)  # noqa: T201
        return 1
    audit.record(_cli_actor(), "kek.rotate", settings.kek_path.name, old_kek=old, new_kek=new)
    print(f"key-encryption key rotated ({old} -> {new}); data keys re-wrapped, no data re-encrypted")  # noqa: T201
    print("a running server reads the new key at its next start; it keeps working meanwhile")  # noqa: T201
    return 0


def cmd_keys_rotate_data_key(_: argparse.Namespace) -> int:
    settings = Settings()
    _store, audit = _keys()
    try:
        vault = Vault(open_database(settings.database_path, settings.database_url), settings.kek_path)
        key_id = vault.new_data_key()
        count = sum(
            vault.reencrypt(table, id_column, columns, REENCRYPT_BATCH.get(table.name, 500))
            for table, id_column, columns in ENCRYPTED_COLUMNS
        )
    except CryptoError as exc:
        print(str(exc), file=sys.stderr)  # noqa: T201
        return 1
    audit.record(_cli_actor(), "data_key.rotate", key_id, reencrypted=count)
    print(f"new data key {key_id}; {count} stored values re-encrypted (run again to resume if interrupted)")  # noqa: T201
    return 0


# -- alerts --------------------------------------------------------------------------------------


def cmd_alerts(args: argparse.Namespace) -> int:
    if args.check is not None:
        try:
            rules = load_rules(Path(args.check))
        except RulesError as exc:
            print(exc, file=sys.stderr)  # noqa: T201
            return 1
        print(f"{args.check}: ok, {len(rules)} rules in effect")  # noqa: T201
        return 0
    key = args.key or os.environ.get("MOLTBOT_API_KEY")
    if not key:
        print("an admin API key is needed: --key or MOLTBOT_API_KEY", file=sys.stderr)  # noqa: T201
        return 2
    try:
        response = httpx.get(
            _base_url(args) + "/admin/alerts",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
            verify=_verify(args),
        )
    except httpx.HTTPError as exc:
        print(f"cannot reach the server: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    if response.status_code != 200:
        message = response.json().get("error", {}).get("message", response.text)
        print(f"error {response.status_code}: {message}", file=sys.stderr)  # noqa: T201
        return 1
    alerts = response.json()["data"]
    if args.json:
        print(json.dumps(alerts, indent=2))  # noqa: T201
        return 0
    if not alerts:
        print("no active alerts")  # noqa: T201
        return 0
    rows: list[list[object]] = [["ALERT", "SEVERITY", "STATE", "VALUE", "THRESHOLD", "SINCE", "SUMMARY"]]
    for alert in alerts:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(alert["active_at"]))
        summary = alert["annotations"].get("summary", "")
        rows.append(
            [
                alert["alertname"],
                alert["severity"],
                alert["state"],
                f"{alert['value']:.4g}",
                alert["threshold"],
                since,
                summary,
            ]
        )
    print(_table(rows))  # noqa: T201
    return 0


# -- doctor --------------------------------------------------------------------------------------


def cmd_doctor(_: argparse.Namespace) -> int:
    from moltbot.app import worker_factory
    from moltbot.models.store import ModelStore, external_source

    runtime = _runtime()
    r = runtime.resources
    rows: list[list[object]] = [
        ["CHECK", "VALUE"],
        ["cores (physical/logical)", f"{r.physical_cores}/{r.logical_cores}"],
        ["memory", f"{r.memory_gib:.1f} GiB"],
        ["free disk (data dir)", f"{r.disk_free_bytes / (1 << 30):.1f} GiB"],
        ["GPUs", r.gpu_count],
        ["profile", runtime.profile.name.value],
        ["threads / context / batch", f"{runtime.threads} / {runtime.context_size} / {runtime.batch_size}"],
        ["parallel sequences / queue", f"{runtime.parallel} / {runtime.max_queue}"],
        ["data dir", runtime.settings.data_dir],
    ]
    status = 0
    settings = runtime.settings
    store = ModelStore(settings.models_dir, settings.model_versions_kept)
    sources = store.active_sources()
    if settings.model_path is not None and (extra := external_source(settings.model_path)) is not None:
        sources.append(extra)
    build = worker_factory(runtime, store=store)
    for source in sources:
        started = time.perf_counter()
        try:
            build(source).close()
            rows.append([f"model {source.id}", f"loads ({time.perf_counter() - started:.1f} s)"])
        except Exception as exc:  # noqa: BLE001 - doctor reports every failure
            rows.append([f"model {source.id}", f"FAILS: {exc}"])
            status = 1
    print(_table(rows))  # noqa: T201
    return status


# -- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moltbot", description="A private, self-hosted AI assistant.")
    parser.add_argument("--version", action="version", version=f"moltbot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    chat = sub.add_parser("chat", help="chat with a running server in the terminal")
    chat.add_argument("--url", help="the server's base URL, with or without /v1 (default: the running server's)")
    chat.add_argument("--cacert", help="CA file to verify the server (default: the data directory's local CA)")
    chat.add_argument("--key", help="API key (default: $MOLTBOT_API_KEY)")
    chat.add_argument("--model", help="a model id (default: the server's default chat model)")
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument("--temperature", type=float, default=0.7)
    chat.add_argument("--max-tokens", type=int, default=512)
    chat.set_defaults(func=cmd_chat)

    cli_models.add_parser(sub, _table, _verify)
    cli_pipelines.add_parser(sub, _table)
    cli_documents.add_parser(sub, _base_url, _verify)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key; the token is the last line printed")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", help="comma-separated, e.g. chat,admin (default: chat,embeddings,models:read)")
    create.add_argument("--expires-days", type=float)
    create.set_defaults(func=cmd_keys_create)
    keys.add_parser("list", help="list keys").set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_keys_revoke)
    keys.add_parser("rotate-kek", help="new key-encryption key; re-wraps the data keys").set_defaults(
        func=cmd_keys_rotate_kek
    )
    keys.add_parser("rotate-data-key", help="new data key; re-encrypts stored data under it").set_defaults(
        func=cmd_keys_rotate_data_key
    )

    sessions = sub.add_parser("sessions", help="stored conversations (read from the database)").add_subparsers(
        dest="action", required=True
    )
    listing = sessions.add_parser("list", help="sessions, newest first")
    listing.add_argument("--key-id", help="only this API key's sessions")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(func=cmd_sessions_list)
    for name, func, text in (
        ("show", cmd_sessions_show, "a session and its messages"),
        ("export", cmd_sessions_export, "a session as JSON (the API's export format)"),
        ("rm", cmd_sessions_rm, "delete a session and its messages"),
    ):
        command = sessions.add_parser(name, help=text)
        command.add_argument("id")
        command.set_defaults(func=func)

    alerts = sub.add_parser("alerts", help="active alerts of a running server, or check a rules file")
    alerts.add_argument("--url", help="the server's base URL, with or without /v1 (default: the running server's)")
    alerts.add_argument("--cacert", help="CA file to verify the server (default: the data directory's local CA)")
    alerts.add_argument("--key", help="an admin API key (default: $MOLTBOT_API_KEY)")
    alerts.add_argument("--json", action="store_true", help="print the alerts as JSON")
    alerts.add_argument("--check", metavar="FILE", help="validate an alert rules file and exit")
    alerts.set_defaults(func=cmd_alerts)

    sub.add_parser("ca", help="the local TLS CA: where it is and how to trust it").set_defaults(func=cmd_ca)
    sub.add_parser("doctor", help="check resources, profile and models").set_defaults(func=cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)  # noqa: T201
        return 2


if __name__ == "__main__":
    sys.exit(main())
