"""Prometheus view of the engines: queue, running sequences, batch size, tokens, prefix-cache use."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from moltbot.engine.stats import EngineStats
from moltbot.models.manager import ModelManager

_HELP = {
    "waiting": "Requests waiting for a sequence slot.",
    "running": "Sequences being decoded together.",
    "last_batch_tokens": "Tokens evaluated in the engine's last step (batch size).",
    "steps_total": "Engine steps (one llama_decode each).",
    "prompt_tokens_total": "Prompt tokens admitted.",
    "generated_tokens_total": "Tokens generated.",
    "reused_tokens_total": "Prompt tokens found already computed in the KV cache and not evaluated again.",
    "cache_hits_total": "Requests that reused part of their prompt from the KV cache.",
    "cache_misses_total": "Requests that reused nothing from the KV cache.",
    "finished_total": "Sequences ended, for any reason.",
    "host_cache_bytes": "Bytes of KV states kept in host memory.",
    "host_cache_entries": "KV states kept in host memory.",
    "host_cache_saves_total": "KV states copied from a slot to host memory.",
    "host_cache_restores_total": "KV states copied back from host memory into a slot.",
    "disk_cache_bytes": "Bytes of KV states kept on disk (encrypted).",
    "disk_cache_entries": "KV states kept on disk.",
    "disk_cache_restores_total": "KV states loaded from disk into a slot.",
    "cancelled_total": "Sequences ended because the client left.",
}
_NAMES = {
    "waiting": "moltbot_engine_requests_waiting",
    "running": "moltbot_engine_sequences_running",
    "last_batch_tokens": "moltbot_engine_batch_tokens",
    "steps_total": "moltbot_engine_steps",
    "prompt_tokens_total": "moltbot_engine_prompt_tokens",
    "generated_tokens_total": "moltbot_engine_generated_tokens",
    "reused_tokens_total": "moltbot_engine_cache_reused_tokens",
    "cache_hits_total": "moltbot_engine_cache_hits",
    "cache_misses_total": "moltbot_engine_cache_misses",
    "finished_total": "moltbot_engine_sequences_finished",
    "host_cache_bytes": "moltbot_engine_host_cache_bytes",
    "host_cache_entries": "moltbot_engine_host_cache_entries",
    "host_cache_saves_total": "moltbot_engine_host_cache_saves",
    "host_cache_restores_total": "moltbot_engine_host_cache_restores",
    "disk_cache_bytes": "moltbot_engine_disk_cache_bytes",
    "disk_cache_entries": "moltbot_engine_disk_cache_entries",
    "disk_cache_restores_total": "moltbot_engine_disk_cache_restores",
    "cancelled_total": "moltbot_engine_sequences_cancelled",
}


class EngineCollector(Collector):
    """Reads every loaded model's engine counters at scrape time."""

    def __init__(self, models: ModelManager) -> None:
        self._models = models

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for name in (f.name for f in fields(EngineStats) if f.name in _NAMES):
            kind = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
            families[name] = kind(_NAMES[name], _HELP[name], labels=["model"])
        ttft = HistogramMetricFamily(
            "moltbot_time_to_first_token_seconds",
            "From a request's arrival at the engine to its first generated token.",
            labels=["model"],
        )
        itl = HistogramMetricFamily(
            "moltbot_inter_token_latency_seconds", "Time between two generated tokens of a sequence.", labels=["model"]
        )
        in_flight = GaugeMetricFamily(
            "moltbot_engine_requests_in_flight", "Requests admitted and not yet finished.", labels=["model"]
        )
        for entry in self._models.entries():
            worker = entry.worker
            if worker is None:
                continue
            in_flight.add_metric([entry.source.id], worker.queue_depth)
            stats = getattr(worker, "stats", None)
            if isinstance(stats, EngineStats):
                for name, family in families.items():
                    family.add_metric([entry.source.id], getattr(stats, name))
                for histogram, source in ((ttft, stats.ttft_seconds), (itl, stats.inter_token_seconds)):
                    histogram.add_metric([entry.source.id], source.cumulative(), source.total)
        yield in_flight
        yield ttft
        yield itl
        yield from families.values()
