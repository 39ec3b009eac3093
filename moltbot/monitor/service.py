"""The monitor thread: every interval, read the machine and the server, evaluate the alert rules,
notify on transitions."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from moltbot.engine.stats import TTFT_BUCKETS, EngineStats
from moltbot.models.manager import ModelManager
from moltbot.monitor.evaluator import AlertEvent, Evaluator, Reading, Window
from moltbot.monitor.metrics import HTTP_BUCKETS, Metrics
from moltbot.monitor.notify import Notifier
from moltbot.monitor.rules import Rule
from moltbot.monitor.sampler import ResourceSampler

log = logging.getLogger(__name__)


class Monitor:
    """Owns the sample window and the evaluator; `tick` is one evaluation (the thread calls it)."""

    def __init__(
        self,
        metrics: Metrics,
        sampler: ResourceSampler,
        models: ModelManager,
        rules: Sequence[Rule],
        *,
        notifiers: Sequence[Notifier],
        interval_s: float,
        base_labels: dict[str, str] | None = None,
    ) -> None:
        self._metrics = metrics
        self._sampler = sampler
        self._models = models
        self._notifiers = list(notifiers)
        self.interval_s = interval_s
        span = max((r.window for r in rules), default=0.0) + interval_s
        self.window = Window(interval_s, HTTP_BUCKETS, TTFT_BUCKETS, span_s=span)
        self.evaluator = Evaluator(rules, base_labels)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="monitor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for notifier in self._notifiers:
            notifier.close()

    def active(self) -> list[dict[str, Any]]:
        return self.evaluator.active()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception:  # a failed evaluation must not end monitoring
                log.exception("monitor evaluation failed")

    def tick(self) -> list[AlertEvent]:
        self.window.add(self.read())
        events = self.evaluator.evaluate(self.window, time.monotonic(), time.time())
        if events:
            for notifier in self._notifiers:
                notifier.notify(events)
        return events

    def read(self) -> Reading:
        sample = self._sampler.sample()
        stats = [s for s in (getattr(e.worker, "stats", None) for e in self._models.entries()) if s is not None]
        engines = [s for s in stats if isinstance(s, EngineStats)]
        ttft = [0] * (len(TTFT_BUCKETS) + 1)
        for engine in engines:
            ttft = [a + b for a, b in zip(ttft, engine.ttft_seconds.counts, strict=True)]
        metrics = self._metrics
        return Reading(
            at=sample.at,
            cpu_percent=None if sample.cpu_ratio is None else 100.0 * sample.cpu_ratio,
            memory_percent=100.0 * sample.memory_ratio,
            disk_percent=100.0 * sample.disk_ratio,
            rss_bytes=sample.process_rss_bytes,
            requests_in_flight=metrics.in_flight,
            requests_waiting=sum(e.waiting for e in engines),
            http_buckets=tuple(itertools.accumulate(metrics.response_start.counts)),
            ttft_buckets=tuple(itertools.accumulate(ttft)),
            loads_attempted=metrics.loads_attempted,
            loads_succeeded=metrics.loads_succeeded,
        )
