"""Webhook notifications: Alertmanager's payload, retries, a receiver that is down or slow."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from moltbot.monitor.evaluator import AlertEvent
from moltbot.monitor.notify import WebhookNotifier, alertmanager_payload
from tests.helpers import WebhookReceiver


def event(status: str = "firing", name: str = "CPU") -> AlertEvent:
    alert = {
        "alertname": name,
        "severity": "warning",
        "state": "firing",
        "value": 80.0,
        "threshold": 75.0,
        "labels": {"job": "moltbot", "alertname": name, "severity": "warning"},
        "annotations": {"summary": "CPU high"},
        "active_at": 1_700_000_000.0,
        "fired_at": 1_700_000_030.0,
        "fingerprint": "0123456789abcdef",
    }
    return AlertEvent(status, alert, 1_700_000_090.0 if status == "resolved" else None)


def wait_for_an_outcome(outcomes: Counter[str], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not outcomes and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


def test_payload_has_alertmanagers_webhook_shape() -> None:
    firing = alertmanager_payload(event())
    assert firing["version"] == "4" and firing["status"] == "firing"
    assert set(firing) >= {"receiver", "groupLabels", "commonLabels", "commonAnnotations", "externalURL", "alerts"}
    (alert,) = firing["alerts"]
    assert alert["labels"]["alertname"] == "CPU" and alert["annotations"] == {"summary": "CPU high"}
    assert alert["startsAt"] == "2023-11-14T22:13:50.000Z" and alert["endsAt"] == "0001-01-01T00:00:00Z"
    resolved = alertmanager_payload(event("resolved"))
    assert resolved["alerts"][0]["endsAt"] == "2023-11-14T22:14:50.000Z"


def test_delivered_in_order(receiver: WebhookReceiver) -> None:
    outcomes: Counter[str] = Counter()
    notifier = WebhookNotifier([receiver.url], outcome=lambda o: outcomes.update([o]))
    try:
        notifier.notify([event("firing"), event("resolved")])
        assert receiver.wait_for(lambda bodies: len(bodies) == 2, 10)
        assert [b["status"] for b in receiver.bodies] == ["firing", "resolved"]
    finally:
        notifier.close()
    assert outcomes == Counter({"sent": 2})


def test_a_failing_receiver_is_retried_with_backoff_then_counted(receiver: WebhookReceiver) -> None:
    receiver.status = 503
    outcomes: Counter[str] = Counter()
    notifier = WebhookNotifier([receiver.url], outcome=lambda o: outcomes.update([o]), attempts=3, backoff_s=0.05)
    try:
        notifier.notify([event()])
        wait_for_an_outcome(outcomes)
    finally:
        notifier.close()
    assert receiver.attempts == 3 and outcomes == Counter({"failed": 1})


def test_a_receiver_that_recovers_gets_the_notification(receiver: WebhookReceiver) -> None:
    receiver.status = 500
    outcomes: Counter[str] = Counter()
    notifier = WebhookNotifier([receiver.url], outcome=lambda o: outcomes.update([o]), attempts=5, backoff_s=0.2)
    try:
        notifier.notify([event()])
        time.sleep(0.1)
        receiver.status = 200
        assert receiver.wait_for(lambda bodies: len(bodies) == 1, 10)
    finally:
        notifier.close()
    assert outcomes["sent"] == 1


def test_a_slow_receiver_never_blocks_and_overflow_is_dropped(receiver: WebhookReceiver) -> None:
    receiver.delay_s = 0.5
    outcomes: Counter[str] = Counter()
    notifier = WebhookNotifier([receiver.url], outcome=lambda o: outcomes.update([o]), max_queue=4, timeout_s=2)
    try:
        started = time.perf_counter()
        for i in range(20):
            notifier.notify([event(name=f"A{i}")])
        assert time.perf_counter() - started < 0.2  # the caller never waits for the receiver
        assert outcomes["dropped"] >= 20 - 4 - 1  # one may already be in flight
    finally:
        notifier.close(timeout_s=1)


def test_an_unreachable_receiver_fails_fast() -> None:
    outcomes: Counter[str] = Counter()
    notifier = WebhookNotifier(
        ["http://127.0.0.1:9/x"], outcome=lambda o: outcomes.update([o]), attempts=2, backoff_s=0.01
    )
    try:
        notifier.notify([event()])
        wait_for_an_outcome(outcomes)
    finally:
        notifier.close()
    assert outcomes == Counter({"failed": 1})
