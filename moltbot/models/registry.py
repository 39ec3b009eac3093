"""Push and pull model packages to any OCI distribution registry (httpx, following the distribution spec).

Auth: HTTP basic, or the token flow (a 401 with `WWW-Authenticate: Bearer realm=...` sends us to the
realm for a token, with the credentials as basic auth). TLS verified against the system CAs or a CA
bundle; plain HTTP only for registries the operator names as insecure. Every blob is verified by its
digest before it enters the store; a blob download interrupted midway resumes with a Range request.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from moltbot.models.store import (
    MANIFEST_MEDIA_TYPE,
    BlobRange,
    ModelStore,
    StoreError,
    Version,
    check_digest,
    check_name,
)

Progress = Callable[[int], None]
_REFERENCE = re.compile(
    r"^(?P<host>[A-Za-z0-9.-]+(?::\d+)?)/(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_MAX_MANIFEST = 4 * 1024 * 1024
_CHUNK = 1 << 20


class RegistryError(StoreError):
    """The registry cannot be used: unreachable, refused our credentials, or sent something wrong."""


@dataclass(slots=True, frozen=True)
class Reference:
    host: str
    repository: str
    reference: str  # a tag or a digest

    @classmethod
    def parse(cls, text: str) -> Reference:
        match = _REFERENCE.match(text)
        if match is None:
            raise StoreError(f"invalid registry reference {text!r}: expected HOST[:PORT]/REPOSITORY[:TAG]")
        return cls(match["host"], match["repo"], match["digest"] or match["tag"] or "latest")

    def __str__(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.host}/{self.repository}{sep}{self.reference}"


@dataclass(slots=True, frozen=True)
class RegistryAuth:
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: Path | None = None
    insecure_hosts: tuple[str, ...] = ()  # "*" for every registry

    def insecure(self, host: str) -> bool:
        return "*" in self.insecure_hosts or host in self.insecure_hosts


@dataclass(slots=True)
class Transfer:
    """What a push or pull moved."""

    version: Version | None = None
    digest: str = ""
    bytes_moved: int = 0
    bytes_reused: int = 0
    layers_moved: int = 0
    layers_reused: int = 0
    seconds: float = 0.0


class RegistryClient:
    def __init__(
        self, host: str, auth: RegistryAuth, timeout_s: float = 60.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._host = host
        self._auth = auth
        insecure = auth.insecure(host)
        self._base = f"{'http' if insecure else 'https'}://{host}"
        verify: ssl.SSLContext | bool = True
        if not insecure:
            verify = ssl.create_default_context(cafile=str(auth.ca_file) if auth.ca_file else None)
        timeout = httpx.Timeout(timeout_s, connect=10.0)
        self._http = httpx.Client(verify=verify, timeout=timeout, transport=transport)
        self._authorization: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------------

    def _unreachable(self, exc: httpx.TransportError) -> str:
        if _is_tls_failure(exc) and not self._auth.insecure(self._host):
            return (
                f"the TLS handshake with the registry {self._host} failed; a registry that speaks plain HTTP "
                "must be named in MOLTBOT_REGISTRY_INSECURE"
            )
        return f"cannot reach the registry {self._host}: {type(exc).__name__}"

    def _send(
        self, method: str, url: str, *, stream: bool = False, follow: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """One request to the registry. Credentials go only to the registry's own origin; with `follow`,
        redirects (blob storage) are followed, and httpx drops the credentials on another origin."""
        if not url.startswith("http"):
            url = self._base + url
        own = httpx.URL(url).copy_with(path="/", query=None, fragment=None) == httpx.URL(self._base + "/")
        headers = dict(kwargs.pop("headers", {}))
        for attempt in range(2):
            if self._authorization and own:
                headers["Authorization"] = self._authorization
            try:
                request = self._http.build_request(method, url, headers=headers, **kwargs)
                response = self._http.send(request, stream=stream, follow_redirects=follow)
            except httpx.TransportError as exc:
                raise RegistryError(self._unreachable(exc)) from exc
            if response.url.scheme != "https" and not self._auth.insecure(response.url.netloc.decode()):
                response.close()
                raise RegistryError(f"the registry {self._host} sent us to plain HTTP; refused")
            if response.status_code != 401 or attempt == 1:
                break
            response.close()
            self._authenticate(response.headers.get("www-authenticate", ""))
        if response.status_code == 401:
            response.close()
            raise RegistryError(f"the registry {self._host} refused the credentials (401)")
        if response.status_code == 403:
            response.close()
            raise RegistryError(f"the registry {self._host} denied access (403)")
        return response

    def _authenticate(self, challenge: str) -> None:
        scheme = challenge.split(" ", 1)[0].lower()
        basic = httpx.BasicAuth(self._auth.username, self._auth.password)
        if scheme == "basic":
            if not self._auth.username:
                raise RegistryError(f"the registry {self._host} needs credentials (MOLTBOT_REGISTRY_USERNAME/PASSWORD)")
            self._authorization = _basic_header(basic)
            return
        if scheme != "bearer":
            raise RegistryError(
                f"the registry {self._host} asks for an unsupported authentication ({scheme or 'none'})"
            )
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.pop("realm", "")
        realm_url = httpx.URL(realm) if realm.startswith(("https://", "http://")) else None
        if realm_url is None:
            raise RegistryError(f"the registry {self._host} sent a token challenge without a realm")
        if realm_url.scheme != "https" and not self._auth.insecure(realm_url.netloc.decode()):
            raise RegistryError(f"the registry's token service is plain HTTP ({realm_url.host}); refused")
        try:
            reply = self._http.get(realm, params=params, auth=basic if self._auth.username else None)
        except httpx.TransportError as exc:
            raise RegistryError(f"cannot reach the registry's token service: {type(exc).__name__}") from exc
        if reply.status_code != 200:
            raise RegistryError(f"the registry's token service refused the credentials ({reply.status_code})")
        try:
            body = reply.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError("the registry's token service sent no token")
        self._authorization = f"Bearer {token}"

    @staticmethod
    def _check(response: httpx.Response, what: str) -> None:
        if response.status_code >= 400:
            detail = ""
            try:
                response.read()
                errors = response.json().get("errors") or []
                detail = ": " + "; ".join(str(e.get("message", e.get("code", ""))) for e in errors)[:300]
            except (ValueError, AttributeError, httpx.HTTPError):
                pass
            finally:
                response.close()
            raise RegistryError(f"{what} failed with HTTP {response.status_code}{detail}")

    # -- the distribution API --------------------------------------------------------------------

    def get_manifest(self, ref: Reference) -> tuple[bytes, str]:
        url = f"/v2/{ref.repository}/manifests/{ref.reference}"
        response = self._send("GET", url, stream=True, headers={"Accept": MANIFEST_MEDIA_TYPE})
        if response.status_code == 404:
            response.close()
            raise StoreError(f"{ref} does not exist in the registry")
        self._check(response, f"fetching the manifest of {ref}")
        try:
            body = b""
            for chunk in response.iter_bytes(64 * 1024):
                body += chunk
                if len(body) > _MAX_MANIFEST:
                    raise RegistryError("the manifest is too large")
        except httpx.TransportError as exc:
            raise RegistryError(f"the manifest of {ref} broke off: {type(exc).__name__}") from exc
        finally:
            response.close()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        expected = (
            ref.reference if ref.reference.startswith("sha256:") else response.headers.get("docker-content-digest")
        )
        if expected and expected != digest:
            raise RegistryError(f"the manifest of {ref} does not match its digest; refused")
        return body, digest

    def put_manifest(self, ref: Reference, body: bytes) -> str:
        url = f"/v2/{ref.repository}/manifests/{ref.reference}"
        response = self._send("PUT", url, content=body, headers={"Content-Type": MANIFEST_MEDIA_TYPE})
        self._check(response, f"pushing the manifest of {ref}")
        return str(response.headers.get("docker-content-digest", ""))

    def has_blob(self, repository: str, digest: str) -> bool:
        response = self._send("HEAD", f"/v2/{repository}/blobs/{digest}")
        if response.status_code == 404:
            return False
        self._check(response, f"checking blob {digest}")
        return True

    def push_blob(self, repository: str, digest: str, blob: BlobRange, progress: Progress | None = None) -> None:
        start = self._send("POST", f"/v2/{repository}/blobs/uploads/")
        self._check(start, "starting a blob upload")
        location = start.headers.get("location", "")
        if not location:
            raise RegistryError("the registry did not say where to upload")
        if location.startswith("/"):
            location = self._base + location
        url = httpx.URL(location).copy_merge_params({"digest": digest})

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)}
        response = self._send("PUT", str(url), content=_BlobBody(blob, progress), headers=headers)
        self._check(response, f"uploading blob {digest}")

    def fetch_blob(
        self, repository: str, digest: str, size: int, store: ModelStore, progress: Progress | None = None
    ) -> int:
        """Download a blob into the store (resuming a partial file); return the bytes downloaded. The
        partial file is locked while it grows: a second pull of the same blob waits, then finds it."""
        partial = store.partial_path(digest)
        with partial.open("ab") as out:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX)
            if store.has_blob(digest):  # another process finished it while we waited
                partial.unlink(missing_ok=True)
                return 0
            have = out.tell()
            if have > size:
                _empty(out)
                have = 0
            moved = self._download(repository, digest, size, out, have=have, progress=progress) if have < size else 0
            store.commit_partial(digest, size)
        return moved

    def _download(
        self, repository: str, digest: str, size: int, out: BinaryIO, *, have: int, progress: Progress | None
    ) -> int:
        moved = 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        url = f"/v2/{repository}/blobs/{digest}"
        response = self._send("GET", url, stream=True, follow=True, headers=headers)
        try:
            self._check(response, f"downloading blob {digest}")
            resumed = response.status_code == 206
            if resumed and not response.headers.get("content-range", "").startswith(f"bytes {have}-"):
                raise RegistryError(f"the registry answered a resumed download of {digest} with other bytes")
            if response.status_code not in (200, 206):
                raise RegistryError(f"downloading blob {digest} answered HTTP {response.status_code}")
            if resumed:
                if progress is not None:
                    progress(have)
            else:
                _empty(out)  # the whole blob again
            for chunk in response.iter_bytes(_CHUNK):
                if out.tell() + len(chunk) > size:
                    _empty(out)
                    raise RegistryError(f"blob {digest} is larger than its manifest says; refused")
                out.write(chunk)
                moved += len(chunk)
                if progress is not None:
                    progress(len(chunk))
            out.flush()
        except httpx.TransportError as exc:
            raise RegistryError(f"the download of {digest} broke off: {type(exc).__name__}") from exc
        finally:
            response.close()
        return moved


@dataclass(slots=True, frozen=True)
class _BlobBody:
    """A blob streamed as a request body; iterable again, so a request retried after a 401 sends it whole."""

    blob: BlobRange
    progress: Progress | None

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.blob.chunks():
            if self.progress is not None:
                self.progress(len(chunk))
            yield chunk


def _is_tls_failure(exc: httpx.TransportError) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return True
        cause = cause.__cause__ or cause.__context__
    return "SSL" in str(exc)


def _empty(out: BinaryIO) -> None:
    """Empty a partial blob file. In append mode `tell()` keeps the old offset until the next write
    unless the position is moved too."""
    out.truncate(0)
    out.seek(0)


def _basic_header(auth: httpx.BasicAuth) -> str:
    request = httpx.Request("GET", "http://x")
    flow = auth.auth_flow(request)
    return str(next(flow).headers["Authorization"])


def pull(
    store: ModelStore,
    source: str,
    auth: RegistryAuth,
    *,
    name: str | None = None,
    progress: Callable[[int, int], Progress] | None = None,
    activate: bool = False,
) -> Transfer:
    """Fetch a package and install it as the next version of `name` (the repository's last part by
    default). Only blobs the store lacks are downloaded; the version appears whole or not at all."""
    ref = Reference.parse(source)
    target = check_name(name or ref.repository.rsplit("/", 1)[-1])
    started = time.perf_counter()
    result = Transfer()
    with RegistryClient(ref.host, auth) as client, store.writing():
        body, digest = client.get_manifest(ref)
        try:
            manifest = json.loads(body)
            config_ref = manifest["config"]
            layer_refs = [(check_digest(x["digest"]), int(x["size"])) for x in manifest["layers"]]
            blobs = [(check_digest(config_ref["digest"]), int(config_ref["size"])), *layer_refs]
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"{ref}: malformed manifest") from exc
        if not 0 <= blobs[0][1] <= _MAX_MANIFEST:
            raise RegistryError(f"{ref}: implausible config size")
        # The config first, so that the whole manifest is checked before any layer moves.
        if not store.has_blob(blobs[0][0]):
            result.bytes_moved += client.fetch_blob(ref.repository, blobs[0][0], blobs[0][1], store)
            result.layers_moved += 1
        store.check_manifest(body)
        housed = store.housing()
        missing = [(d, s) for d, s in dict.fromkeys(layer_refs) if store.locate(d, housed) is None]
        total = sum(s for _, s in missing)
        callback = progress(total, len(missing)) if progress is not None else None
        for blob_digest, size in missing:
            result.bytes_moved += client.fetch_blob(ref.repository, blob_digest, size, store, callback)
            result.layers_moved += 1
        result.bytes_reused = sum(s for d, s in layer_refs if (d, s) not in missing)
        result.layers_reused = sum(1 for d, s in layer_refs if (d, s) not in missing)
        result.version = store.install(target, body, origin=f"pull:{ref}", activate=activate)
    result.digest = digest
    result.seconds = time.perf_counter() - started
    return result


def push(
    store: ModelStore,
    name: str,
    number: int | None,
    destination: str,
    auth: RegistryAuth,
    *,
    progress: Callable[[int, int], Progress] | None = None,
) -> Transfer:
    """Upload a version's blobs (those the registry lacks) and its manifest under the tag."""
    ref = Reference.parse(destination)
    started = time.perf_counter()
    version = store.version(name, number)
    manifest_bytes = store.read_blob(version.manifest)
    manifest = json.loads(manifest_bytes)
    blobs = [(manifest["config"]["digest"], int(manifest["config"]["size"]))]
    blobs += [(layer["digest"], int(layer["size"])) for layer in manifest["layers"]]
    result = Transfer(version=version, digest=version.manifest)
    with RegistryClient(ref.host, auth) as client:
        missing = [(d, s) for d, s in dict.fromkeys(blobs) if not client.has_blob(ref.repository, d)]
        callback = progress(sum(s for _, s in missing), len(missing)) if progress is not None else None
        housed = store.housing()
        for digest, size in missing:
            found = store.locate(digest, housed)
            if found is None:
                raise StoreError(f"blob {digest} of {name!r} is missing from the store")
            client.push_blob(ref.repository, digest, found, callback)
            result.bytes_moved += size
            result.layers_moved += 1
        result.bytes_reused = sum(s for _, s in blobs) - result.bytes_moved
        result.layers_reused = len(blobs) - len(missing)
        client.put_manifest(ref, manifest_bytes)
    result.seconds = time.perf_counter() - started
    return result
