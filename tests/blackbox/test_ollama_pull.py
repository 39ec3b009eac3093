"""Ollama's /api/pull and /api/delete on the model repository, through the official `ollama` client:
a package pushed to a real OCI registry (CNCF distribution, TLS and htpasswd) is pulled with progress,
served at once, then deleted; names without a registry host and keys without `models:write` are
refused."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ollama
import pytest

from tests.helpers import CHAT_MODEL, EMBEDDING_MODEL, START_TIMEOUT_S, Server, create_key, run_cli, running_server
from tests.registry import Registry, registry_env


@pytest.fixture(scope="module")
def pushed(make_data_dir: Callable[..., Path], registry: Registry) -> str:
    reference = f"{registry.host}/team/minilm:v1"
    done = run_cli(make_data_dir("pull-src"), "models", "push", EMBEDDING_MODEL, reference, env=registry_env(registry))
    assert done.returncode == 0, done.stderr
    return reference


@pytest.fixture(scope="module")
def server(make_data_dir: Callable[..., Path], registry: Registry) -> Iterator[Server]:
    env = registry_env(registry, MOLTBOT_MODELS=json.dumps([CHAT_MODEL]))
    with running_server(make_data_dir("pull-dst"), env) as srv:
        srv.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield srv


def _client(server: Server, key: str) -> ollama.Client:
    host = server.base_url.removesuffix("/v1")
    return ollama.Client(host=host, headers={"Authorization": f"Bearer {key}"}, verify=server.verify)


def test_pull_serves_the_model_and_delete_removes_it(server: Server, pushed: str) -> None:
    client = _client(server, server.admin_key)
    try:
        statuses = [part.status for part in client.pull(pushed, stream=True)]
        assert statuses[0] == "pulling manifest" and statuses[-1] == "success", statuses
        assert "pulling layers" in statuses and "writing manifest" in statuses
        assert "minilm" in {m.model for m in client.list().models}
        assert len(client.embed(model="minilm", input="a pulled model").embeddings[0]) == 384
        assert client.pull(pushed).status == "success"  # again: nothing to move, still served
        client.delete("minilm")
        assert "minilm" not in {m.model for m in client.list().models}
        with pytest.raises(ollama.ResponseError) as gone:
            client.embed(model="minilm", input="deleted")
        assert gone.value.status_code == 404
        with pytest.raises(ollama.ResponseError) as twice:
            client.delete("minilm")
        assert twice.value.status_code == 404
    finally:
        client._client.close()


def test_pull_refusals(server: Server, pushed: str) -> None:
    client = _client(server, server.admin_key)
    reader = _client(server, create_key(server.data_dir, "models:read,chat", name="reader"))
    try:
        with pytest.raises(ollama.ResponseError) as hostless:
            client.pull("qwen2.5:0.5b")
        assert hostless.value.status_code == 400 and "HOST" in hostless.value.error
        with pytest.raises(ollama.ResponseError) as scoped:
            reader.pull(pushed)
        assert scoped.value.status_code in (401, 403)
    finally:
        client._client.close()
        reader._client.close()
