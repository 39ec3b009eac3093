"""The registry fixture (tests/registry.py) is a real OCI registry: basic auth over TLS, blob upload
and download, the stored bytes on disk; and plain HTTP without auth."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import httpx

from tests.registry import registry_server

REPOSITORY = "moltbot/fixture-check"


def test_registry_with_auth_and_tls(tmp_path: Path) -> None:
    with registry_server(tmp_path) as registry:
        assert registry.url.startswith("https://") and registry.ca_file is not None
        anonymous = httpx.get(f"{registry.url}/v2/", verify=registry.verify, timeout=10)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic ")
        wrong = httpx.get(f"{registry.url}/v2/", verify=registry.verify, auth=(registry.username, "wrong"), timeout=10)
        assert wrong.status_code == 401

        blob = b"moltbot-registry-canary-" + secrets.token_bytes(64)
        digest = f"sha256:{hashlib.sha256(blob).hexdigest()}"
        with registry.client() as client:
            assert client.get("/v2/").status_code == 200
            started = client.post(f"/v2/{REPOSITORY}/blobs/uploads/")
            assert started.status_code == 202, started.text
            # The location carries the upload's state in its query: keep it (httpx's params= would replace it).
            location = httpx.URL(registry.url).join(started.headers["location"]).copy_merge_params({"digest": digest})
            done = client.put(location, content=blob, headers={"content-type": "application/octet-stream"})
            assert done.status_code == 201, done.text
            assert done.headers["docker-content-digest"] == digest

            head = client.head(f"/v2/{REPOSITORY}/blobs/{digest}")
            assert head.status_code == 200 and int(head.headers["content-length"]) == len(blob)
            got = client.get(f"/v2/{REPOSITORY}/blobs/{digest}")
            assert got.status_code == 200 and got.content == blob

        paths = registry.blob_paths()
        assert any(p.parent.name == digest.removeprefix("sha256:") and p.read_bytes() == blob for p in paths)


def test_registry_without_auth_or_tls(tmp_path: Path) -> None:
    with registry_server(tmp_path, auth=False, tls=False) as registry:
        assert registry.url == f"http://{registry.host}" and registry.ca_file is None
        assert registry.username == "" and registry.auth is None
        assert httpx.get(f"{registry.url}/v2/", timeout=10).status_code == 200
        assert registry.blob_paths() == []
