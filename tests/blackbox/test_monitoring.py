"""Monitoring through the real server: /metrics, the access log, alerts to a webhook under real load."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import (
    CHAT_MODEL,
    EMBEDDING_MODEL,
    START_TIMEOUT_S,
    Server,
    WebhookReceiver,
    create_key,
    free_port,
    log_records,
    run_cli,
    running_server,
)

# Test rules merged over the shipped ones: one that fires while two or more requests are being served,
# one that is always firing (the data directory's disk is never empty).
TEST_RULES = """
rules:
  - alert: Busy
    signal: requests_in_flight
    warning: 1.5
    for: 0.4s
    annotations:
      summary: "{value} requests in flight"
  - alert: DiskNotEmpty
    signal: disk_percent
    warning: 0
"""

FAMILIES = {
    # HTTP
    "moltbot_http_request_duration_seconds": "histogram",
    "moltbot_http_response_start_seconds": "histogram",
    "moltbot_http_requests_in_flight": "gauge",
    # engine
    "moltbot_time_to_first_token_seconds": "histogram",
    "moltbot_inter_token_latency_seconds": "histogram",
    "moltbot_engine_prompt_tokens": "counter",
    "moltbot_engine_generated_tokens": "counter",
    "moltbot_engine_requests_waiting": "gauge",
    "moltbot_engine_sequences_running": "gauge",
    "moltbot_engine_cache_hits": "counter",
    "moltbot_engine_cache_misses": "counter",
    "moltbot_engine_host_cache_bytes": "gauge",
    # model loads
    "moltbot_model_load_attempts": "counter",
    "moltbot_model_load_successes": "counter",
    "moltbot_model_load_failures": "counter",
    "moltbot_model_load_duration_seconds": "histogram",
    # process, container, disk
    "moltbot_process_cpu_seconds": "counter",
    "moltbot_process_resident_memory_bytes": "gauge",
    "moltbot_process_open_fds": "gauge",
    "moltbot_process_threads": "gauge",
    "moltbot_cpu_usage_ratio": "gauge",
    "moltbot_memory_used_bytes": "gauge",
    "moltbot_memory_limit_bytes": "gauge",
    "moltbot_disk_used_bytes": "gauge",
    "moltbot_disk_total_bytes": "gauge",
    "moltbot_data_dir_size_bytes": "gauge",
    # alerting
    "moltbot_alerts": "gauge",
    "moltbot_alert_notifications": "counter",
}


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def monitored(make_data_dir: Callable[..., Path], receiver: WebhookReceiver) -> Iterator[Server]:
    data_dir = make_data_dir("monitored")
    rules = data_dir.parent / "rules.yml"
    rules.write_text(TEST_RULES)
    env = {
        "MOLTBOT_MONITOR_INTERVAL_S": "0.2",
        "MOLTBOT_ALERT_RULES": str(rules),
        "MOLTBOT_ALERT_WEBHOOKS": json.dumps([receiver.url]),
        "MOLTBOT_METRICS_PORT": str(free_port()),
    }
    with running_server(data_dir, env) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield server


def scrape(server: Server) -> dict[str, object]:
    with server.client() as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def samples(families: dict[str, object], name: str) -> list[tuple[str, dict[str, str], float]]:
    family = families[name]
    return [(s.name, s.labels, s.value) for s in family.samples]  # type: ignore[attr-defined]


def test_metrics_after_a_chat_have_every_family(monitored: Server) -> None:
    with monitored.client() as client:
        body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        assert client.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": "hi"}).status_code == 200
        assert client.get(f"/v1/models/{CHAT_MODEL}").status_code == 200
        assert client.get("/v1/nowhere/at/all").status_code == 404
        for i in range(3):  # any method token a client invents lands in one label value
            assert client.request(f"BREW{i}", "/v1/models").status_code == 405
    families = scrape(monitored)
    for name, kind in FAMILIES.items():
        assert name in families, name
        assert families[name].type == kind, name  # type: ignore[attr-defined]

    routes = {labels["route"] for _, labels, _ in samples(families, "moltbot_http_request_duration_seconds")}
    assert {"/v1/chat/completions", "/v1/embeddings", "/v1/models/{model_id}", "unmatched"} <= routes
    assert not any(CHAT_MODEL in route for route in routes)  # templates, never raw paths
    methods = {labels["method"] for _, labels, _ in samples(families, "moltbot_http_request_duration_seconds")}
    assert methods == {"GET", "POST", "other"}
    chat_count = [
        v
        for n, labels, v in samples(families, "moltbot_http_request_duration_seconds")
        if n.endswith("_count") and labels["route"] == "/v1/chat/completions" and labels["status"] == "200"
    ]
    assert chat_count and chat_count[0] >= 1
    ttft = [v for n, labels, v in samples(families, "moltbot_time_to_first_token_seconds") if n.endswith("_count")]
    assert ttft and ttft[0] >= 1
    generated = [v for n, _, v in samples(families, "moltbot_engine_generated_tokens") if n.endswith("_total")]
    assert generated and generated[0] >= 1
    loaded = {labels["model"] for _, labels, v in samples(families, "moltbot_model_load_successes") if v == 1}
    assert loaded == {CHAT_MODEL, EMBEDDING_MODEL}
    buckets = {
        labels["le"]
        for n, labels, _ in samples(families, "moltbot_http_response_start_seconds")
        if n.endswith("_bucket")
    }
    assert {"1.25", "1.5", "1.75"} <= buckets  # P99 resolves around the 1.5 s objective
    memory = samples(families, "moltbot_memory_used_bytes")[0][2]
    limit = samples(families, "moltbot_memory_limit_bytes")[0][2]
    assert 0 < memory <= limit


def test_metrics_need_the_metrics_scope(monitored: Server) -> None:
    chat_only = create_key(monitored.data_dir, "chat", name="chat-only")
    metrics_only = create_key(monitored.data_dir, "metrics", name="scraper")
    time.sleep(1.2)  # keys are refreshed in the background every half second
    with monitored.client(chat_only) as client:
        assert client.get("/metrics").status_code == 403
        assert client.get("/v1/admin/alerts").status_code == 403
    with monitored.client(metrics_only) as client:
        assert client.get("/metrics").status_code == 200
    assert monitored.get("/metrics").status_code == 401


def test_separate_metrics_port_is_open_on_loopback(monitored: Server) -> None:
    settings = [r for r in log_records(monitored.stderr()) if r["message"].startswith("effective settings")]
    port = json.loads(settings[0]["message"].partition(": ")[2])["metrics_port"]
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    assert "moltbot_http_requests_in_flight" in response.text


def test_access_log_is_json_with_request_id_and_no_content(monitored: Server) -> None:
    canary = "canary-7f3a9c-do-not-log"
    with monitored.client() as client:
        body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": canary}], "max_tokens": 4}
        response = client.post("/v1/chat/completions", json=body, headers={"x-request-id": "req-test-42"})
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "req-test-42"
        generated = client.get("/v1/models").headers["x-request-id"]
        bad = client.get("/v1/models", headers={"x-request-id": "bad id\twith spaces"}).headers["x-request-id"]
    assert len(generated) == 16 and bad != "bad id\twith spaces"
    time.sleep(0.2)
    log = monitored.stderr()
    (line,) = [r for r in log_records(log) if r.get("request_id") == "req-test-42"]
    assert line["logger"] == "moltbot.access"
    assert line["route"] == "/v1/chat/completions" and line["status"] == 200 and line["method"] == "POST"
    assert line["duration_ms"] > 0 and line["key_id"] and "time" in line
    assert canary not in log
    assert monitored.admin_key not in log and monitored.admin_key.split("_", 2)[2] not in log


def _load(server: Server, streams: int, max_tokens: int) -> list[threading.Thread]:
    def one() -> None:
        body = {"model": CHAT_MODEL, "prompt": "Count: 1, 2, 3, 4,", "max_tokens": max_tokens, "temperature": 0}
        with server.client() as client:
            client.post("/v1/completions", json=body)

    threads = [threading.Thread(target=one) for _ in range(streams)]
    for thread in threads:
        thread.start()
    return threads


def test_webhook_gets_firing_then_resolved_under_real_load(monitored: Server, receiver: WebhookReceiver) -> None:
    def busy(status: str) -> Callable[[list[dict[str, object]]], bool]:
        return lambda bodies: any(
            b["status"] == status and b["commonLabels"]["alertname"] == "Busy"  # type: ignore[index]
            for b in bodies
        )

    assert not busy("firing")(receiver.bodies)
    threads = _load(monitored, streams=3, max_tokens=200)
    try:
        assert receiver.wait_for(busy("firing"), 30), receiver.bodies
        with monitored.client() as client:
            active = client.get("/v1/admin/alerts").json()["data"]
        busy_alerts = [a for a in active if a["alertname"] == "Busy"]
        assert busy_alerts and busy_alerts[0]["state"] == "firing" and busy_alerts[0]["value"] >= 2
    finally:
        for thread in threads:
            thread.join(timeout=120)
    assert receiver.wait_for(busy("resolved"), 30), receiver.bodies
    firing = next(b for b in receiver.bodies if busy("firing")([b]))
    (alert,) = firing["alerts"]  # type: ignore[misc]
    assert alert["labels"]["severity"] == "warning" and alert["labels"]["job"] == "moltbot"
    assert "requests in flight" in alert["annotations"]["summary"]
    families = scrape(monitored)
    sent = [v for n, labels, v in samples(families, "moltbot_alert_notifications") if labels["outcome"] == "sent"]
    assert sent and sent[0] >= 2


def test_alerts_api_metric_and_cli(monitored: Server) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with monitored.client() as client:
            active = client.get("/v1/admin/alerts").json()["data"]
        if any(a["alertname"] == "DiskNotEmpty" for a in active):
            break
        time.sleep(0.1)
    disk = next(a for a in active if a["alertname"] == "DiskNotEmpty")
    assert disk["state"] == "firing" and disk["severity"] == "warning" and disk["value"] > 0
    series = samples(scrape(monitored), "moltbot_alerts")
    assert (
        "moltbot_alerts",
        {"alertname": "DiskNotEmpty", "severity": "warning", "alertstate": "firing"},
        1.0,
    ) in series
    url = monitored.base_url
    listed = run_cli(monitored.data_dir, "alerts", "--url", url, env={"MOLTBOT_API_KEY": monitored.admin_key})
    assert listed.returncode == 0, listed.stderr
    assert "DiskNotEmpty" in listed.stdout and "firing" in listed.stdout
    as_json = run_cli(monitored.data_dir, "alerts", "--url", url, "--json", "--key", monitored.admin_key)
    assert any(a["alertname"] == "DiskNotEmpty" for a in json.loads(as_json.stdout))
    no_key = run_cli(monitored.data_dir, "alerts", "--url", url, env={"MOLTBOT_API_KEY": ""})
    assert no_key.returncode == 2


def test_a_bad_rules_file_refuses_to_start_naming_the_line(tmp_path: Path) -> None:
    rules = tmp_path / "bad.yml"
    rules.write_text("rules:\n  - alert: Hot\n    signal: cpu_percent\n    warning: very\n")
    result = run_cli(tmp_path / "data", "serve", env={"MOLTBOT_ALERT_RULES": str(rules)}, timeout=60)
    assert result.returncode == 2
    assert f"alert rules file {rules}, line 4: rules[0].warning" in result.stderr
    checked = run_cli(tmp_path / "data", "alerts", "--check", str(rules))
    assert checked.returncode == 1 and "line 4" in checked.stderr
    rules.write_text(TEST_RULES)
    assert "ok, 8 rules in effect" in run_cli(tmp_path / "data", "alerts", "--check", str(rules)).stdout
