"""The built-in evaluator on synthetic series: thresholds, `for`, resolve, the leak slope, quantiles."""

from __future__ import annotations

import itertools
import random

import pytest

from moltbot.monitor.evaluator import Evaluator, Reading, Window, histogram_quantile, least_squares_slope
from moltbot.monitor.rules import Rule, parse_rules

BOUNDS = (0.1, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
INTERVAL = 15.0


def rules(text: str) -> list[Rule]:
    return parse_rules("rules:\n" + text, "test")


def window(interval: float = INTERVAL) -> Window:
    return Window(interval, BOUNDS, BOUNDS, span_s=3600)


def run(evaluator: Evaluator, readings: list[Reading]) -> list[list[tuple[str, str, str]]]:
    """Feed readings one by one; per step, the (status, alertname, severity) of each notification."""
    win = window()
    steps = []
    for reading in readings:
        win.add(reading)
        events = evaluator.evaluate(win, reading.at, 1_700_000_000 + reading.at)
        steps.append([(e.status, e.alert["alertname"], e.alert["severity"]) for e in events])
    return steps


CPU = "  - alert: CPU\n    signal: cpu_percent\n    warning: 75\n    critical: 90\n    for: 30s\n"


def test_warning_then_critical_after_for_then_resolved() -> None:
    values = [50, 80, 80, 80, 95, 95, 95, 60]
    readings = [Reading(at=i * INTERVAL, cpu_percent=v) for i, v in enumerate(values)]
    evaluator = Evaluator(rules(CPU))
    steps = run(evaluator, readings)
    assert steps[0] == [] and steps[1] == [] and steps[2] == []  # pending for 15 s, then 30 s
    assert steps[3] == [("firing", "CPU", "warning")]
    assert steps[4] == [] and steps[5] == []  # critical pending; warning already notified: no repeat
    assert steps[6] == [("firing", "CPU", "critical")]
    assert sorted(steps[7]) == [("resolved", "CPU", "critical"), ("resolved", "CPU", "warning")]
    assert evaluator.active() == []


def test_a_blip_shorter_than_for_never_fires() -> None:
    readings = [Reading(at=i * INTERVAL, cpu_percent=v) for i, v in enumerate([80, 80, 50, 80, 50, 80])]
    evaluator = Evaluator(rules(CPU))
    assert all(step == [] for step in run(evaluator, readings))


def test_active_lists_pending_and_firing_with_labels() -> None:
    evaluator = Evaluator(rules(CPU + "    labels: {team: ops}\n"), {"job": "moltbot"})
    win = window()
    for i, value in enumerate([95, 95, 95]):
        win.add(Reading(at=i * INTERVAL, cpu_percent=value))
        evaluator.evaluate(win, i * INTERVAL, 1000.0 + i)
    active = evaluator.active()
    assert [(a["alertname"], a["severity"], a["state"]) for a in active] == [
        ("CPU", "critical", "firing"),
        ("CPU", "warning", "firing"),
    ]
    assert active[0]["labels"] == {"job": "moltbot", "team": "ops", "alertname": "CPU", "severity": "critical"}
    assert active[0]["value"] == 95 and active[0]["fired_at"] == 1002.0


def test_no_data_is_not_a_breach_and_resolves_a_firing_alert() -> None:
    evaluator = Evaluator(rules(CPU.replace("for: 30s", "for: 0s")))
    readings = [Reading(at=0, cpu_percent=None), Reading(at=15, cpu_percent=99), Reading(at=30, cpu_percent=None)]
    steps = run(evaluator, readings)
    assert steps[0] == []
    assert sorted(steps[1]) == [("firing", "CPU", "critical"), ("firing", "CPU", "warning")]
    assert len(steps[2]) == 2 and all(status == "resolved" for status, _, _ in steps[2])


LEAK = (
    "  - alert: Leak\n    signal: memory_growth_mb_per_minute\n    window: 10m\n"
    "    warning: 10\n    critical: 50\n    for: 5m\n"
)


def rss_series(mb_per_minute: float, minutes: int, noise_mb: float = 0.0, seed: int = 7) -> list[Reading]:
    rng = random.Random(seed)
    steps = int(minutes * 60 / INTERVAL)
    return [
        Reading(
            at=i * INTERVAL, rss_bytes=int(1e9 + mb_per_minute * 1e6 * i * INTERVAL / 60 + rng.gauss(0, noise_mb) * 1e6)
        )
        for i in range(steps + 1)
    ]


def fired(steps: list[list[tuple[str, str, str]]]) -> set[str]:
    return {severity for status, _, severity in itertools.chain.from_iterable(steps) if status == "firing"}


def test_leak_of_20_mb_per_minute_warns() -> None:
    steps = run(Evaluator(rules(LEAK)), rss_series(20, 20, noise_mb=3))
    assert fired(steps) == {"warning"}
    first = next(i for i, s in enumerate(steps) if s)
    # The slope needs 90% of its 10-minute window, then `for: 5m`: not before minute 14.
    assert first * INTERVAL >= 0.9 * 600 + 300


def test_leak_of_60_mb_per_minute_is_critical() -> None:
    assert fired(run(Evaluator(rules(LEAK)), rss_series(60, 20, noise_mb=3))) == {"warning", "critical"}


def test_noise_without_a_trend_does_not_fire() -> None:
    for seed in range(5):
        assert fired(run(Evaluator(rules(LEAK)), rss_series(0, 40, noise_mb=40, seed=seed))) == set()


def test_a_start_up_jump_is_not_judged_before_the_window_is_covered() -> None:
    # The model load adds 800 MB in the first minute, then memory is flat: over a partial window the
    # slope would be huge; over the full window it is a one-off step that `for` outlasts.
    readings = [Reading(at=i * INTERVAL, rss_bytes=int(2e8 if i < 4 else 1e9)) for i in range(61)]
    win = window()
    values = []
    for reading in readings:
        win.add(reading)
        values.append(win.value(rules(LEAK)[0].signal, 600))
    assert all(v is None for v in values[:36])  # 9 minutes of readings are needed
    assert all(v is not None and v < 10 for v in values[44:])  # once the step leaves the window's bulk


def test_least_squares_slope_is_exact_on_a_line() -> None:
    assert least_squares_slope([(x, 3 * x + 2) for x in range(10)]) == pytest.approx(3)
    assert least_squares_slope([(1, 5), (1, 7)]) == 0.0


def test_histogram_quantile_matches_prometheus() -> None:
    # 100 observations: 50 in (0, 0.1], 40 in (0.1, 0.5], 10 in (0.5, 1.0].
    cumulative = [50, 90, 100, 100, 100, 100, 100, 100]
    assert histogram_quantile(0.5, BOUNDS, cumulative) == pytest.approx(0.1)
    assert histogram_quantile(0.99, BOUNDS, cumulative) == pytest.approx(0.5 + 0.5 * 9 / 10)
    assert histogram_quantile(0.99, BOUNDS, [0, 0, 0, 0, 0, 0, 0, 10]) == 5.0  # +Inf: highest finite bound
    assert histogram_quantile(0.99, BOUNDS, [0] * 8) is None


def test_api_p99_counts_only_requests_inside_its_window() -> None:
    api = "  - alert: Slow\n    signal: api_p99_seconds\n    window: 1m\n    warning: 1.5\n"
    (rule,) = rules(api)
    win = window()
    slow = (0, 0, 0, 0, 0, 100, 100, 100)  # 100 requests between 2 s and 3 s
    win.add(Reading(at=0, http_buckets=(0,) * 8))
    win.add(Reading(at=15, http_buckets=slow))
    assert rule.crossed(win.value(rule.signal, rule.window) or 0, 1.5)
    for i in range(2, 8):  # then 100 fast ones (under 0.1 s) every 15 s, for longer than the window
        win.add(Reading(at=i * 15, http_buckets=tuple(count + 100 * (i - 1) for count in slow)))
    value = win.value(rule.signal, rule.window)
    assert value is not None and value < 0.2


def test_window_is_bounded() -> None:
    win = Window(0.05, BOUNDS, BOUNDS, span_s=3600)
    for i in range(30_000):
        win.add(Reading(at=i * 0.05))
    assert len(win) == win.capacity <= 20_000
