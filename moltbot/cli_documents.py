"""`moltbot docs ingest DIR`: every document of a folder through a running server, with a progress bar
that survives Ctrl-C: a second run resumes, skipping what was uploaded and following what is queued.

What was sent is remembered by content (sha256) in `<data dir>/ingest/<folder hash>.json`, written
atomically after each upload: an interrupted run loses nothing and uploads nothing twice.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from moltbot.settings import Settings
from moltbot.storage.files import write_atomic

SUFFIXES = {".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".txt"}
FINAL = ("done", "failed")
POLL_S = 1.0


def _err(text: str) -> None:
    print(text, file=sys.stderr)  # noqa: T201


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _state_path(folder: Path) -> Path:
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    return Settings().data_dir / "ingest" / f"{key}.json"


def _load(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"documents": {}}
    return state if isinstance(state.get("documents"), dict) else {"documents": {}}


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, json.dumps(state, indent=1).encode())


def cmd_ingest(args: argparse.Namespace, base_url: Callable[[argparse.Namespace], str], verify: Any) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        _err(f"{folder}: not a folder")
        return 2
    key = args.key or os.environ.get("MOLTBOT_API_KEY")
    if not key:
        _err("an API key with the documents scope is needed: --key or MOLTBOT_API_KEY")
        return 2
    state_path = _state_path(folder)
    state = _load(state_path)
    known: dict[str, dict[str, Any]] = state["documents"]
    files = _files(folder)
    headers = {"Authorization": f"Bearer {key}"}
    fields = {k: v for k, v in (("pipeline", args.pipeline), ("languages", args.languages)) if v}
    try:
        with httpx.Client(base_url=base_url(args), headers=headers, verify=verify(args), timeout=600) as client:
            with tqdm(total=len(files), unit="file", desc="upload", disable=args.quiet) as bar:
                for path in files:
                    digest = _digest(path)
                    if digest in known:
                        bar.update(1)
                        continue
                    with path.open("rb") as handle:
                        response = client.post(
                            "/documents", files={"file": (path.name, handle, "application/octet-stream")}, data=fields
                        )
                    if response.status_code == 202:
                        card = response.json()
                        known[digest] = {
                            "file": str(path.relative_to(folder)),
                            "id": card["id"],
                            "pages": card["pages"],
                        }
                    else:
                        message = response.json().get("error", {}).get("message", response.text)
                        known[digest] = {"file": str(path.relative_to(folder)), "rejected": message}
                        tqdm.write(f"{path.name}: refused ({response.status_code}): {message}", file=sys.stderr)
                    _save(state_path, state)
                    bar.update(1)
            return _follow(client, known, args.quiet)
    except KeyboardInterrupt:
        _save(state_path, state)
        _err(f"\ninterrupted: {len(known)} of {len(files)} files sent; run the same command again to go on")
        return 130
    except httpx.HTTPError as exc:
        _save(state_path, state)
        _err(f"cannot reach the server: {exc}")
        return 1


def _follow(client: httpx.Client, known: dict[str, dict[str, Any]], quiet: bool) -> int:
    """Wait for every sent document's job, with one bar over all their pages."""
    pending = {entry["id"]: entry for entry in known.values() if "id" in entry}
    total = sum(int(entry.get("pages", 0)) for entry in pending.values())
    failed = 0
    with tqdm(total=total, unit="page", desc="process", disable=quiet) as bar:
        done_pages: dict[str, int] = {}
        while pending:
            for document_id in list(pending):
                response = client.get(f"/documents/{document_id}")
                if response.status_code == 404:  # deleted meanwhile
                    pending.pop(document_id)
                    continue
                card = response.json()
                pages = int(card["pages_done"]) + int(card["pages_failed"])
                bar.update(pages - done_pages.get(document_id, 0))
                done_pages[document_id] = pages
                if card["status"] in FINAL:
                    entry = pending.pop(document_id)
                    if card["status"] == "failed":
                        failed += 1
                        tqdm.write(f"{entry['file']}: failed: {card.get('error')}", file=sys.stderr)
            if pending:
                time.sleep(POLL_S)
    rejected = sum(1 for entry in known.values() if "rejected" in entry)
    _err(f"{len(known) - rejected - failed} documents done, {failed} failed, {rejected} refused")
    return 1 if failed or rejected else 0


def add_parser(sub: Any, base_url: Callable[[argparse.Namespace], str], verify: Any) -> None:
    docs = sub.add_parser("docs", help="documents on a running server").add_subparsers(dest="action", required=True)
    ingest = docs.add_parser("ingest", help="upload a folder's documents and follow their jobs (resumable)")
    ingest.add_argument("folder")
    ingest.add_argument("--url", help="the server's base URL, with or without /v1 (default: the running server's)")
    ingest.add_argument("--cacert", help="CA file to verify the server (default: the data directory's local CA)")
    ingest.add_argument("--key", help="an API key with the documents scope (default: $MOLTBOT_API_KEY)")
    ingest.add_argument("--pipeline", help="a shipped pipeline (default: documents)")
    ingest.add_argument("--languages", help="OCR languages, e.g. eng+chi_sim (default: the server's)")
    ingest.add_argument("--quiet", action="store_true", help="no progress bars")
    ingest.set_defaults(func=lambda args: cmd_ingest(args, base_url, verify))
