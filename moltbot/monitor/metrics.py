"""Every metric the server exports, on one Prometheus registry.

Names follow Prometheus conventions: `moltbot_` prefix, base units (`_seconds`, `_bytes`, `_ratio`),
`_total` on counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from moltbot.engine.stats import LatencyHistogram
from moltbot.models.manager import ModelManager
from moltbot.monitor.engine_metrics import EngineCollector
from moltbot.monitor.sampler import ResourceSampler

# Fine around the 1.5 s P99 objective and the 3 s critical threshold, so both resolve well.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0)
HTTP_BUCKETS_LONG = (*HTTP_BUCKETS, 10.0, 30.0, 60.0, 120.0, 300.0)  # whole responses include generation
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_FRESH_S = 60.0


class Metrics:
    """The registry and the instruments the gateway and the model manager report to."""

    def __init__(self, models: ModelManager, sampler: ResourceSampler) -> None:
        # No `_created` series: they double the output and no dashboard uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        registry = self.registry
        labels = ["method", "route", "status"]
        self._duration = Histogram(
            "moltbot_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route template and status.",
            labels,
            buckets=HTTP_BUCKETS_LONG,
            registry=registry,
        )
        self._first_byte = Histogram(
            "moltbot_http_response_start_seconds",
            "Time from a request's arrival to the start of its response (for a stream, its first event).",
            labels,
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.in_flight = 0
        Gauge("moltbot_http_requests_in_flight", "HTTP requests being served.", registry=registry).set_function(
            lambda: self.in_flight
        )
        # All routes together, for the built-in evaluator (same buckets as the response-start histogram).
        self.response_start = LatencyHistogram(HTTP_BUCKETS)
        model_labels = ["model", "version"]
        self._load_attempts = Counter(
            "moltbot_model_load_attempts", "Model loads attempted.", model_labels, registry=registry
        )
        self._load_successes = Counter(
            "moltbot_model_load_successes", "Model loads that succeeded.", model_labels, registry=registry
        )
        self._load_failures = Counter(
            "moltbot_model_load_failures", "Model loads that failed.", model_labels, registry=registry
        )
        self._load_seconds = Histogram(
            "moltbot_model_load_duration_seconds",
            "Time to load a model, successful or not.",
            model_labels,
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.loads_attempted = 0
        self.loads_succeeded = 0
        self._notifications = Counter(
            "moltbot_alert_notifications",
            "Alert webhook deliveries by outcome: sent, failed (after every retry) or dropped (queue full).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("sent", "failed", "dropped"):
            self._notifications.labels(outcome)
        registry.register(EngineCollector(models))
        registry.register(ResourceCollector(sampler))

    def observe_http(self, method: str, route: str, status: int, response_start: float, duration: float) -> None:
        code = str(status)
        self._duration.labels(method, route, code).observe(duration)
        self._first_byte.labels(method, route, code).observe(response_start)
        self.response_start.observe(response_start)

    def model_loaded(self, model: str, version: str, ok: bool, seconds: float) -> None:
        self.loads_attempted += 1
        self._load_attempts.labels(model, version).inc()
        if ok:
            self.loads_succeeded += 1
            self._load_successes.labels(model, version).inc()
            self._load_failures.labels(model, version)
        else:
            self._load_failures.labels(model, version).inc()
            self._load_successes.labels(model, version)
        self._load_seconds.labels(model, version).observe(seconds)

    def notification(self, outcome: str) -> None:
        self._notifications.labels(outcome).inc()

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)


class ResourceCollector(Collector):
    """The process, the container (or host) and the data directory's disk, from the sampler's latest
    reading (taken every monitor interval), or a fresh one when there is none recent."""

    def __init__(self, sampler: ResourceSampler) -> None:
        self._sampler = sampler

    def collect(self) -> Iterator[Metric]:
        sample = self._sampler.latest
        if sample is None or sample.cpu_ratio is None or time.monotonic() - sample.at > _FRESH_S:
            sample = self._sampler.sample()
        yield CounterMetricFamily(
            "moltbot_process_cpu_seconds", "CPU time of this process, user and system.", sample.process_cpu_seconds
        )
        gauges: list[tuple[str, str, float]] = [
            ("moltbot_process_resident_memory_bytes", "Resident memory of this process.", sample.process_rss_bytes),
            ("moltbot_process_open_fds", "Open file descriptors of this process.", sample.process_open_fds),
            ("moltbot_process_threads", "Threads of this process.", sample.process_threads),
            (
                "moltbot_process_start_time_seconds",
                "Start time of this process, seconds since the epoch.",
                self._sampler.started_at,
            ),
            (
                "moltbot_cpu_cores",
                "CPU cores this process may use (the container's quota, or the host's).",
                sample.cpu_cores,
            ),
            (
                "moltbot_memory_used_bytes",
                "Memory in use: the container's working set, or the host's.",
                sample.memory_used_bytes,
            ),
            (
                "moltbot_memory_limit_bytes",
                "Memory limit: the container's, or the host's total.",
                sample.memory_limit_bytes,
            ),
            ("moltbot_disk_used_bytes", "Used bytes of the data directory's filesystem.", sample.disk_used_bytes),
            ("moltbot_disk_total_bytes", "Size of the data directory's filesystem.", sample.disk_total_bytes),
            ("moltbot_data_dir_size_bytes", "Bytes of files under the data directory.", sample.data_dir_bytes),
        ]
        if sample.cpu_ratio is not None:
            gauges.append(
                (
                    "moltbot_cpu_usage_ratio",
                    "CPU use of the container (or host) over the last interval, 0 to 1.",
                    sample.cpu_ratio,
                )
            )
        for name, help_text, value in gauges:
            yield GaugeMetricFamily(name, help_text, value=value)
        if sample.gpus:
            util = GaugeMetricFamily("moltbot_gpu_utilization_ratio", "GPU busy time, 0 to 1.", labels=["gpu", "name"])
            used = GaugeMetricFamily("moltbot_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu", "name"])
            total = GaugeMetricFamily("moltbot_gpu_memory_total_bytes", "GPU memory.", labels=["gpu", "name"])
            for gpu in sample.gpus:
                key = [str(gpu.index), gpu.name]
                util.add_metric(key, gpu.utilization_ratio)
                used.add_metric(key, gpu.memory_used_bytes)
                total.add_metric(key, gpu.memory_total_bytes)
            yield from (util, used, total)


class AlertCollector(Collector):
    """`moltbot_alerts`: one series per pending or firing alert, as Prometheus's own ALERTS."""

    def __init__(self, active: Callable[[], list[dict[str, object]]]) -> None:
        self._active = active

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "moltbot_alerts",
            "Alerts of the built-in evaluator: 1 per pending or firing alert.",
            labels=["alertname", "severity", "alertstate"],
        )
        for alert in self._active():
            family.add_metric([str(alert["alertname"]), str(alert["severity"]), str(alert["state"])], 1.0)
        yield family
