"""The registry client's auth flows and reference parsing, against an in-process fake registry."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import httpx
import pytest

from moltbot.models.registry import Reference, RegistryAuth, RegistryClient, RegistryError
from moltbot.models.store import BlobRange, ModelStore, StoreError

MANIFEST = b'{"schemaVersion": 2}'


def token_registry(seen: list[str]) -> httpx.MockTransport:
    """401 with a Bearer challenge; the realm hands out a token for the right basic credentials."""
    good = "Basic " + base64.b64encode(b"alice:secret").decode()

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path} {request.headers.get('authorization', '-')}")
        if request.url.host == "auth.test":
            if request.headers.get("authorization") != good:
                return httpx.Response(401)
            assert request.url.params["scope"] == "repository:team/m:pull"
            return httpx.Response(200, json={"token": "tok-1"})
        if request.headers.get("authorization") != "Bearer tok-1":
            challenge = 'Bearer realm="https://auth.test/token",service="reg",scope="repository:team/m:pull"'
            return httpx.Response(401, headers={"www-authenticate": challenge})
        return httpx.Response(200, content=MANIFEST)

    return httpx.MockTransport(handle)


def test_token_auth_flow() -> None:
    seen: list[str] = []
    auth = RegistryAuth("alice", "secret")
    with RegistryClient("reg.test", auth, transport=token_registry(seen)) as client:
        body, digest = client.get_manifest(Reference.parse("reg.test/team/m:v1"))
    assert body == MANIFEST and digest.startswith("sha256:")
    assert seen[0].endswith(" -") and seen[1].startswith("GET /token Basic ") and seen[2].endswith("Bearer tok-1")


def test_token_auth_with_wrong_credentials_is_a_clear_error() -> None:
    with (
        RegistryClient("reg.test", RegistryAuth("alice", "wrong"), transport=token_registry([])) as client,
        pytest.raises(RegistryError, match="token service refused the credentials"),
    ):
        client.get_manifest(Reference.parse("reg.test/team/m:v1"))


def test_basic_auth_needs_credentials() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(401, headers={"www-authenticate": 'Basic realm="r"'}))
    with (
        RegistryClient("reg.test", RegistryAuth(), transport=transport) as client,
        pytest.raises(RegistryError, match="needs credentials"),
    ):
        client.get_manifest(Reference.parse("reg.test/team/m:v1"))


def test_a_manifest_that_does_not_match_its_digest_is_refused() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(200, content=MANIFEST))
    ref = Reference.parse("reg.test/team/m@sha256:" + "0" * 64)
    with RegistryClient("reg.test", RegistryAuth(), transport=transport) as client, pytest.raises(RegistryError):
        client.get_manifest(ref)


@pytest.mark.parametrize(
    ("text", "host", "repository", "reference"),
    [
        ("127.0.0.1:5000/team/gemma:v2", "127.0.0.1:5000", "team/gemma", "v2"),
        ("registry.example/gemma", "registry.example", "gemma", "latest"),
        ("localhost:5000/a/b/c@sha256:" + "a" * 64, "localhost:5000", "a/b/c", "sha256:" + "a" * 64),
    ],
)
def test_references(text: str, host: str, repository: str, reference: str) -> None:
    ref = Reference.parse(text)
    assert (ref.host, ref.repository, ref.reference) == (host, repository, reference)


@pytest.mark.parametrize("text", ["gemma", "host/../x:v1", "host/UPPER:v1", "host/repo:bad tag", ""])
def test_bad_references(text: str) -> None:
    with pytest.raises(StoreError, match="invalid registry reference"):
        Reference.parse(text)


def test_insecure_hosts() -> None:
    assert RegistryAuth(insecure_hosts=("*",)).insecure("any:1")
    assert RegistryAuth(insecure_hosts=("a:1",)).insecure("a:1") and not RegistryAuth().insecure("a:1")


def storage_redirect(seen: list[tuple[str, str]], target: str) -> httpx.MockTransport:
    blob = b"layer bytes" * 100

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url.host), request.headers.get("authorization", "-")))
        if request.url.host == "reg.test":
            if request.headers.get("authorization") != "Basic " + base64.b64encode(b"alice:secret").decode():
                return httpx.Response(401, headers={"www-authenticate": 'Basic realm="r"'})
            return httpx.Response(307, headers={"location": target})
        return httpx.Response(200, content=blob)

    return httpx.MockTransport(handle)


def test_blob_redirects_are_followed_without_the_credentials(tmp_path: Path) -> None:
    blob = b"layer bytes" * 100
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    store = ModelStore(tmp_path / "store")
    seen: list[tuple[str, str]] = []
    transport = storage_redirect(seen, "https://storage.test/blobs/x?sig=1")
    with RegistryClient("reg.test", RegistryAuth("alice", "secret"), transport=transport) as client:
        assert client.fetch_blob("team/m", digest, len(blob), store) == len(blob)
    assert store.read_blob(digest) == blob
    assert seen[-1] == ("storage.test", "-") and seen[-2][1].startswith("Basic ")
    with (
        RegistryClient(
            "reg.test", RegistryAuth("alice", "secret"), transport=storage_redirect([], "http://x.test/b")
        ) as client,
        pytest.raises(RegistryError, match="plain HTTP"),
    ):
        client.fetch_blob("team/m", "sha256:" + "1" * 64, 10, store)
    assert "secret" not in repr(RegistryAuth("alice", "secret"))


def test_a_resume_answered_with_the_whole_blob_starts_again(tmp_path: Path) -> None:
    """A registry that ignores Range sends the whole blob: the partial file is emptied and refilled."""
    blob = b"0123456789" * 300
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    store = ModelStore(tmp_path / "store")
    store.partial_path(digest).write_bytes(blob[:2000])
    ranges: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        ranges.append(request.headers.get("range", "-"))
        return httpx.Response(200, content=blob)

    with RegistryClient("reg.test", RegistryAuth(), transport=httpx.MockTransport(handle)) as client:
        assert client.fetch_blob("team/m", digest, len(blob), store) == len(blob)
    assert ranges == ["bytes=2000-"] and store.read_blob(digest) == blob


def test_a_partial_file_longer_than_the_blob_is_downloaded_again(tmp_path: Path) -> None:
    blob = b"abc" * 1000
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    store = ModelStore(tmp_path / "store")
    store.partial_path(digest).write_bytes(b"x" * (len(blob) + 10))
    transport = httpx.MockTransport(lambda _: httpx.Response(200, content=blob))
    with RegistryClient("reg.test", RegistryAuth(), transport=transport) as client:
        assert client.fetch_blob("team/m", digest, len(blob), store) == len(blob)
    assert store.read_blob(digest) == blob


def test_an_upload_retried_after_a_401_sends_the_whole_blob(tmp_path: Path) -> None:
    """The token expires between the upload's start and its PUT: the PUT is sent again, body and all."""
    blob = os.urandom(3 << 20)
    source = tmp_path / "blob"
    source.write_bytes(blob)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    received: list[bytes] = []
    tokens = iter(["tok-1", "tok-2"])
    challenge = 'Bearer realm="https://auth.test/token",service="reg",scope="repository:team/m:push"'
    state = {"valid": ""}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            state["valid"] = next(tokens)
            return httpx.Response(200, json={"token": state["valid"]})
        body = request.read()  # a client sends its body before it reads the answer
        if request.headers.get("authorization") != f"Bearer {state['valid']}":
            return httpx.Response(401, headers={"www-authenticate": challenge})
        if request.method == "POST":
            state["valid"] = "expired"  # the next request needs a new token
            return httpx.Response(202, headers={"location": "/v2/team/m/blobs/uploads/u1"})
        received.append(body)
        return httpx.Response(201)

    auth = RegistryAuth("alice", "secret")
    with RegistryClient("reg.test", auth, transport=httpx.MockTransport(handle)) as client:
        client.push_blob("team/m", digest, BlobRange(source, 0, len(blob)))
    assert received == [blob]
