"""The built-in alert evaluator: a bounded window of readings, signals computed from it, and
per-alert states inactive -> pending -> firing -> resolved, as Prometheus evaluates its rules."""

from __future__ import annotations

import enum
import hashlib
import json
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from moltbot.monitor.rules import MAX_WINDOW_S, Rule, Severity, Signal

_MB = 1e6
_LEAK_COVERAGE = 0.9  # the RSS slope needs readings over 90% of its window: no verdict from a start-up ramp
_MAX_READINGS = 20_000


@dataclass(slots=True, frozen=True)
class Reading:
    """What the monitor reads every interval. Histograms are cumulative bucket counts since start."""

    at: float  # time.monotonic()
    cpu_percent: float | None = None
    memory_percent: float | None = None
    disk_percent: float | None = None
    rss_bytes: int = 0
    requests_in_flight: int = 0
    requests_waiting: int = 0
    http_buckets: tuple[int, ...] = ()
    ttft_buckets: tuple[int, ...] = ()
    loads_attempted: int = 0
    loads_succeeded: int = 0


class Window:
    """The last readings, enough to cover the longest window a rule asks for; fixed in size."""

    def __init__(
        self,
        interval_s: float,
        http_bounds: Sequence[float],
        ttft_bounds: Sequence[float],
        span_s: float = MAX_WINDOW_S,
    ) -> None:
        size = min(_MAX_READINGS, math.ceil(span_s / interval_s) + 2)
        self._readings: deque[Reading] = deque(maxlen=size)
        self.http_bounds = tuple(http_bounds)
        self.ttft_bounds = tuple(ttft_bounds)

    def __len__(self) -> int:
        return len(self._readings)

    @property
    def capacity(self) -> int:
        return self._readings.maxlen or 0

    def add(self, reading: Reading) -> None:
        self._readings.append(reading)

    def value(self, signal: Signal, window_s: float) -> float | None:
        """The signal's value now, or None when the readings cannot tell yet (the rule stays inactive)."""
        if not self._readings:
            return None
        last = self._readings[-1]
        match signal:
            case Signal.CPU_PERCENT:
                return last.cpu_percent
            case Signal.MEMORY_PERCENT:
                return last.memory_percent
            case Signal.DISK_PERCENT:
                return last.disk_percent
            case Signal.REQUESTS_IN_FLIGHT:
                return float(last.requests_in_flight)
            case Signal.REQUESTS_WAITING:
                return float(last.requests_waiting)
            case Signal.MODEL_LOAD_SUCCESS_PERCENT:
                if last.loads_attempted == 0:
                    return None
                return 100.0 * last.loads_succeeded / last.loads_attempted
            case Signal.API_P99_SECONDS:
                first = self._oldest_within(window_s)
                return _quantile_delta(0.99, self.http_bounds, first.http_buckets, last.http_buckets)
            case Signal.TTFT_P99_SECONDS:
                first = self._oldest_within(window_s)
                return _quantile_delta(0.99, self.ttft_bounds, first.ttft_buckets, last.ttft_buckets)
            case Signal.MEMORY_GROWTH_MB_PER_MINUTE:
                return self._rss_slope(window_s)
        return None

    def _oldest_within(self, window_s: float) -> Reading:
        cutoff = self._readings[-1].at - window_s
        for reading in self._readings:
            if reading.at >= cutoff:
                return reading
        return self._readings[-1]

    def _rss_slope(self, window_s: float) -> float | None:
        cutoff = self._readings[-1].at - window_s
        points = [(r.at, float(r.rss_bytes)) for r in self._readings if r.at >= cutoff]
        if len(points) < 3 or points[-1][0] - points[0][0] < _LEAK_COVERAGE * window_s:
            return None
        return least_squares_slope(points) * 60.0 / _MB


def least_squares_slope(points: Sequence[tuple[float, float]]) -> float:
    """The slope of the least-squares line through the points (what PromQL's deriv() computes)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


def histogram_quantile(q: float, bounds: Sequence[float], cumulative: Sequence[int]) -> float | None:
    """Prometheus's histogram_quantile over cumulative counts (one per bound, then +Inf):
    linear interpolation inside the bucket holding the rank; the highest finite bound for +Inf."""
    if not cumulative or cumulative[-1] <= 0:
        return None
    rank = q * cumulative[-1]
    previous_count, lower = 0, 0.0
    for index, count in enumerate(cumulative):
        if count >= rank:
            if index >= len(bounds):
                return bounds[-1] if bounds else None
            upper = bounds[index]
            in_bucket = count - previous_count
            if in_bucket <= 0:
                return upper
            return lower + (upper - lower) * (rank - previous_count) / in_bucket
        previous_count = count
        lower = bounds[index] if index < len(bounds) else lower
    return bounds[-1] if bounds else None


def _quantile_delta(q: float, bounds: Sequence[float], before: Sequence[int], now: Sequence[int]) -> float | None:
    if not now:
        return None
    base = before if len(before) == len(now) else [0] * len(now)
    return histogram_quantile(q, bounds, [b - a for a, b in zip(base, now, strict=True)])


class AlertState(enum.StrEnum):
    PENDING = "pending"
    FIRING = "firing"


@dataclass(slots=True)
class Alert:
    """One rule at one severity, while its condition holds."""

    rule: Rule
    severity: Severity
    threshold: float
    labels: dict[str, str]
    value: float
    active_since: float  # monotonic
    active_at: float  # wall clock, seconds since the epoch
    state: AlertState = AlertState.PENDING
    fired_at: float | None = None  # wall clock
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.labels, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "alertname": self.rule.alert,
            "severity": self.severity.value,
            "state": self.state.value,
            "signal": self.rule.signal.value,
            "value": self.value,
            "threshold": self.threshold,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "active_at": self.active_at,
            "fired_at": self.fired_at,
            "fingerprint": self.fingerprint,
        }


@dataclass(slots=True, frozen=True)
class AlertEvent:
    """A notification: an alert started firing, or stopped (resolved)."""

    status: str  # "firing" | "resolved"
    alert: dict[str, Any]  # Alert.describe() at the time
    ends_at: float | None  # wall clock, for resolved alerts


class Evaluator:
    """Evaluates every rule against the window; returns the transitions worth a notification."""

    def __init__(self, rules: Sequence[Rule], base_labels: dict[str, str] | None = None) -> None:
        self.rules = list(rules)
        self._base = dict(base_labels or {})
        self._active: dict[tuple[str, Severity], Alert] = {}
        self._lock = threading.Lock()

    def evaluate(self, window: Window, now: float, wall: float) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        with self._lock:
            for rule in self.rules:
                value = window.value(rule.signal, rule.window)
                for severity, threshold in rule.thresholds():
                    key = (rule.alert, severity)
                    holds = value is not None and rule.crossed(value, threshold)
                    alert = self._active.get(key)
                    if holds and value is not None:
                        if alert is None:
                            labels = {**self._base, **rule.labels, "alertname": rule.alert, "severity": severity.value}
                            alert = Alert(rule, severity, threshold, labels, value, now, wall)
                            self._active[key] = alert
                        alert.value = value
                        alert.annotations = rule.annotate(severity, value, threshold)
                        if alert.state is AlertState.PENDING and now - alert.active_since >= rule.for_s:
                            alert.state, alert.fired_at = AlertState.FIRING, wall
                            events.append(AlertEvent("firing", alert.describe(), None))
                    elif alert is not None:
                        del self._active[key]
                        if alert.state is AlertState.FIRING:
                            events.append(AlertEvent("resolved", alert.describe(), wall))
        return events

    def active(self) -> list[dict[str, Any]]:
        """Pending and firing alerts, firing first, then by name."""
        with self._lock:
            alerts = [a.describe() for a in self._active.values()]
        return sorted(alerts, key=lambda a: (a["state"] != "firing", a["alertname"], a["severity"]))
