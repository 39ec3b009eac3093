"""Alert notifications: a structured log line always; webhooks with Alertmanager's webhook payload,
delivered by one background thread from a bounded queue, retried with backoff, never blocking."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from moltbot.monitor.evaluator import AlertEvent

log = logging.getLogger(__name__)
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "not ended yet"


class Notifier(Protocol):
    def notify(self, events: Sequence[AlertEvent]) -> None: ...

    def close(self) -> None: ...


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LogNotifier:
    """One log line per transition, with the alert's labels as fields."""

    def notify(self, events: Sequence[AlertEvent]) -> None:
        for event in events:
            alert = event.alert
            fields = {
                "alert": alert["alertname"],
                "severity": alert["severity"],
                "alert_status": event.status,
                "value": alert["value"],
                "threshold": alert["threshold"],
                "summary": alert["annotations"].get("summary", ""),
            }
            level = logging.WARNING if event.status == "firing" else logging.INFO
            log.log(level, "alert %s %s (%s)", alert["alertname"], event.status, alert["severity"], extra=fields)

    def close(self) -> None:
        return None


def alertmanager_payload(event: AlertEvent, receiver: str = "moltbot", external_url: str = "") -> dict[str, Any]:
    """The body Alertmanager POSTs to its webhook receivers (version 4), for one alert."""
    alert = event.alert
    labels = alert["labels"]
    entry = {
        "status": event.status,
        "labels": labels,
        "annotations": alert["annotations"],
        "startsAt": rfc3339(alert["fired_at"] or alert["active_at"]),
        "endsAt": rfc3339(event.ends_at) if event.ends_at is not None else _ZERO_TIME,
        "generatorURL": external_url,
        "fingerprint": alert["fingerprint"],
    }
    group = {"alertname": labels["alertname"]}
    return {
        "version": "4",
        "groupKey": '{}:{alertname="' + labels["alertname"] + '"}',
        "truncatedAlerts": 0,
        "status": event.status,
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": external_url,
        "alerts": [entry],
    }


Outcome = Callable[[str], None]  # told "sent", "failed" (every attempt failed) or "dropped" (queue full)


class WebhookNotifier:
    """POSTs each event to every URL. A receiver that is down or slow delays only this thread;
    past `max_queue` waiting deliveries new ones are dropped and counted."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        outcome: Outcome | None = None,
        max_queue: int = 64,
        attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        timeout_s: float = 5.0,
    ) -> None:
        self._urls = list(urls)
        self._outcome = outcome or (lambda _: None)
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(maxsize=max_queue)
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False)
        self._thread = threading.Thread(target=self._loop, name="alert-webhooks", daemon=True)
        self._thread.start()

    def notify(self, events: Sequence[AlertEvent]) -> None:
        for event in events:
            payload = alertmanager_payload(event)
            for url in self._urls:
                try:
                    self._queue.put_nowait((url, payload))
                except queue.Full:
                    self._outcome("dropped")
                    log.warning("alert webhook queue full: notification dropped")

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Full):  # a full queue: the thread sees the stop flag instead
            self._queue.put_nowait(None)
        self._thread.join(timeout=timeout_s)
        self._client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            item = self._queue.get()
            if item is None:
                return
            url, payload = item
            self._outcome("sent" if self._deliver(url, payload) else "failed")

    def _deliver(self, url: str, payload: dict[str, Any]) -> bool:
        delay = self._backoff_s
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._client.post(url, json=payload)
                if response.is_success:
                    return True
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            log.warning("alert webhook attempt %d/%d failed: %s", attempt, self._attempts, problem)
            if attempt == self._attempts or self._stop.wait(delay):
                break
            delay = min(delay * 2, self._max_backoff_s)
        return False
