"""Alert rules: the shipped file, an operator's overrides, and errors that name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from moltbot.monitor.rules import RulesError, Severity, Signal, load_rules, parse_duration, parse_rules


def test_shipped_rules_hold_the_operations_thresholds() -> None:
    rules = {r.alert: r for r in load_rules()}
    expected = {
        "MoltbotHighCPU": (Signal.CPU_PERCENT, 75, 90),
        "MoltbotHighMemory": (Signal.MEMORY_PERCENT, 80, 90),
        "MoltbotDiskFilling": (Signal.DISK_PERCENT, 80, 90),
        "MoltbotSlowAPI": (Signal.API_P99_SECONDS, 1.5, 3),
        "MoltbotMemoryLeak": (Signal.MEMORY_GROWTH_MB_PER_MINUTE, 10, 50),
    }
    for name, (signal, warning, critical) in expected.items():
        assert rules[name].signal is signal
        assert rules[name].thresholds() == [(Severity.WARNING, warning), (Severity.CRITICAL, critical)]
    loads = rules["MoltbotModelLoadFailures"]
    assert loads.when == "below" and loads.thresholds() == [(Severity.CRITICAL, 99.9)]
    assert rules["MoltbotMemoryLeak"].window == 600


def test_user_file_overrides_by_name_adds_and_disables(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(
        "rules:\n"
        "  - alert: MoltbotHighCPU\n    signal: cpu_percent\n    warning: 50\n    for: 10s\n"
        "  - alert: MoltbotDiskFilling\n    signal: disk_percent\n    disabled: true\n"
        "  - alert: Busy\n    signal: requests_in_flight\n    critical: 8\n    labels: {team: ops}\n"
    )
    rules = {r.alert: r for r in load_rules(path)}
    assert rules["MoltbotHighCPU"].thresholds() == [(Severity.WARNING, 50)]
    assert rules["MoltbotHighCPU"].for_s == 10
    assert "MoltbotDiskFilling" not in rules
    assert rules["Busy"].labels == {"team": "ops"}
    assert "MoltbotHighMemory" in rules


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("rules:\n  - alert: A\n    signal: cpu_percent\n    warning: lots\n", 4, "warning"),
        (
            "rules:\n  - alert: A\n    signal: cpu_percent\n    warning: 1\n  - alert: B\n    signal: nope\n",
            6,
            "signal",
        ),
        ("rules:\n  - alert: A\n    signal: cpu_percent\n    warning: 1\n    for: soon\n", 5, "not a duration"),
        ("rules:\n  - alert: A\n    signal: cpu_percent\n", 2, "warning or a critical"),
        ("rules:\n  - alert: A\n    signal: cpu_percent\n    warning: 9\n    critical: 5\n", 2, "come before"),
        ("rules:\n  - alert: A\n    signal: cpu_percent\n    warning: 1\n    window: 5m\n", 2, "'window' applies"),
        ("rules:\n  - alert: A\n    signal: cpu_percent\n    warning: 1\n    colour: red\n", 5, "colour"),
        (
            "rules:\n  - alert: A\n    signal: cpu_percent\n    warning: 1\n"
            "    annotations: {summary: '{value.__class__}'}\n",
            2,
            "annotation field",
        ),
        (
            "rules:\n  - alert: A\n    signal: cpu_percent\n    warning: 1\n"
            "  - alert: A\n    signal: cpu_percent\n    warning: 2\n",
            5,
            "defined twice",
        ),
        ("rules:\n  - alert: A\n    signal: [cpu\n", 4, "not valid YAML"),
        ("- alert: A\n", 1, "'rules' list"),
    ],
)
def test_mistakes_name_the_file_and_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(text, "my.yml")
    message = str(info.value)
    assert message.startswith(f"alert rules file my.yml, line {line}:"), message
    assert fragment in message


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot be read"):
        load_rules(tmp_path / "missing.yml")


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), (90, 90), ("0.5s", 0.5)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_annotations_are_filled_in() -> None:
    (rule,) = parse_rules(
        "rules:\n  - alert: A\n    signal: cpu_percent\n    warning: 75\n"
        "    annotations: {summary: 'CPU {value}% > {threshold}% ({severity})'}\n",
        "x",
    )
    assert rule.annotate(Severity.WARNING, 81.234, 75) == {"summary": "CPU 81.23% > 75% (warning)"}
