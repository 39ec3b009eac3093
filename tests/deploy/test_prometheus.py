"""deploy/: the PromQL rules (promtool check + unit tests), the scrape config against a real Prometheus
scraping the real server, and the Grafana dashboard's queries against the metrics the server exports."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import CHAT_MODEL, START_TIMEOUT_S, Server, create_key, free_port, require_tool, running_server

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "moltbot.json"
_METRIC = re.compile(r"\bmoltbot_[a-z0-9_]+")


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = require_tool("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


def test_promql_rules_match_the_built_in_rules() -> None:
    from moltbot.monitor.rules import load_rules

    shipped = {r.alert: r for r in load_rules()}
    promql: dict[str, set[str]] = {}
    for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]:
        promql.setdefault(rule["alert"], set()).add(rule["labels"]["severity"])
        threshold = float(re.findall(r"[<>] ([0-9.]+)", rule["expr"])[0])
        assert threshold in {t for _, t in shipped[rule["alert"]].thresholds()}, rule["alert"]
    assert promql == {name: {s.value for s, _ in r.thresholds()} for name, r in shipped.items()}


@pytest.fixture(scope="module")
def scraped(make_data_dir: Callable[..., Path]) -> Iterator[tuple[Server, str]]:
    with running_server(make_data_dir("scraped")) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        key = create_key(server.data_dir, "metrics", name="prometheus")
        time.sleep(1.2)
        with server.client() as client:
            body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
            assert client.post("/v1/chat/completions", json=body).status_code == 200
        yield server, key


def exported_names(server: Server) -> set[str]:
    with server.client() as client:
        text = client.get("/metrics").text
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_dashboard_queries_use_only_exported_metrics(scraped: tuple[Server, str]) -> None:
    server, _ = scraped
    exported = exported_names(server)
    queries = dashboard_queries()
    assert len(queries) >= 12
    used = {name for query in queries for name in _METRIC.findall(query)}
    missing = sorted(used - exported)
    assert not missing, f"the dashboard queries metrics the server does not export: {missing}"
    panels = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    for topic in (
        "latency",
        "first token",
        "Tokens per second",
        "Queue",
        "cache hit",
        "CPU",
        "Memory",
        "Disk",
        "Model loads",
        "alerts",
    ):
        assert any(topic.lower() in title.lower() for title in panels), topic
    rule_names = {
        name
        for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
        for name in _METRIC.findall(rule["expr"])
    }
    assert not sorted(rule_names - exported), sorted(rule_names - exported)


def _api(url: str, path: str, **params: str) -> Any:
    response = httpx.get(url + path, params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_real_prometheus_scrapes_and_evaluates_the_rules(scraped: tuple[Server, str], tmp_path: Path) -> None:
    prometheus = require_tool("prometheus")
    promtool = require_tool("promtool")
    server, key = scraped
    key_file = tmp_path / "moltbot.key"
    key_file.write_text(key)
    key_file.chmod(0o600)
    # The shipped scrape config, pointed at this server, scraping every second.
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    job = config["scrape_configs"][0]
    job["authorization"]["credentials_file"] = str(key_file)
    job["tls_config"]["ca_file"] = str(server.ca_file)
    job["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        [promtool, "check", "config", str(config_file)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        targets: list[dict[str, Any]] = []
        groups: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                targets = _api(url, "/api/v1/targets")["activeTargets"]
                groups = _api(url, "/api/v1/rules")["groups"]
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            rules = [r for g in groups for r in g["rules"]]
            evaluated = rules and all(r["lastEvaluation"] > "2000" for r in rules)
            if targets and targets[0]["health"] == "up" and evaluated:
                break
            time.sleep(0.2)
        assert targets and targets[0]["health"] == "up", targets
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == 11
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
        # Every dashboard query runs against the scraped data; the metrics are there.
        for query in dashboard_queries():
            _api(url, "/api/v1/query", query=query.replace("$instance", ".*"))
        result = _api(url, "/api/v1/query", query="moltbot_engine_generated_tokens_total")["result"]
        assert result and float(result[0]["value"][1]) >= 1
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
