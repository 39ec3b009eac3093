"""Shared fixtures: the bundled models installed once, and a real server per test module."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers import START_TIMEOUT_S, Server, link_bundled_models, running_server
from tests.registry import Registry, registry_server


@pytest.fixture(scope="module", autouse=True)
def _module_dirs_removed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The directories a test module's fixtures made (data directories with model copies, registries)
    go when the module ends, unless one of its tests failed: the suite's disk use stays that of one
    module, not the sum of all (the session's bundled-model cache stays)."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed != failed:
        return
    for path in set(base.iterdir()) - before:
        if path.is_dir() and not path.name.startswith("bundled-models"):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def bundled_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundled-models")


@pytest.fixture(scope="session")
def make_data_dir(tmp_path_factory: pytest.TempPathFactory, bundled_cache: Path) -> Callable[..., Path]:
    def make(name: str = "data") -> Path:
        data_dir = tmp_path_factory.mktemp(name)
        link_bundled_models(bundled_cache, data_dir / "models")
        return data_dir

    return make


@pytest.fixture(scope="module")
def server(make_data_dir: Callable[..., Path]) -> Iterator[Server]:
    with running_server(make_data_dir()) as srv:
        srv.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield srv


@pytest.fixture(scope="module")
def oai(server: Server) -> Iterator[openai.OpenAI]:
    http = httpx.Client(verify=server.verify, timeout=120)
    client = openai.OpenAI(
        base_url=server.base_url, api_key=server.admin_key, max_retries=0, timeout=120, http_client=http
    )
    yield client
    client.close()
    http.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A real OCI registry (CNCF distribution) on 127.0.0.1 with htpasswd auth and TLS."""
    with registry_server(tmp_path_factory.mktemp("registry")) as reg:
        yield reg
