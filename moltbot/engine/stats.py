"""What the engine counts for monitoring, in plain Python: the monitor turns it into Prometheus metrics.

Written by the engine thread only; read by other threads at scrape time (each field is one object,
so a reader sees every value whole, if not all from the same step).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Upper bounds in seconds. TTFT spans a queue wait and a prompt of thousands of tokens on a CPU;
# inter-token latency on a 2-core machine is tens of milliseconds, and on a GPU a few.
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0)
ITL_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class LatencyHistogram:
    """Counts per bucket (`le` semantics: bucket i counts values <= bounds[i]; the last is +Inf) and a sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: (le, count of values <= le), ending with +Inf."""
        counts = list(self.counts)  # one copy, so the buckets are consistent with each other
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


@dataclass(slots=True)
class EngineStats:
    """Counters and gauges of one engine."""

    waiting: int = 0
    running: int = 0
    steps_total: int = 0
    last_batch_tokens: int = 0
    prompt_tokens_total: int = 0
    generated_tokens_total: int = 0
    reused_tokens_total: int = 0
    cache_hits_total: int = 0
    cache_misses_total: int = 0
    host_cache_bytes: int = 0
    host_cache_entries: int = 0
    host_cache_saves_total: int = 0
    host_cache_restores_total: int = 0
    disk_cache_bytes: int = 0
    disk_cache_entries: int = 0
    disk_cache_restores_total: int = 0
    finished_total: int = 0
    cancelled_total: int = 0
    # From a request's arrival at the engine to its first sampled token, and between sampled tokens.
    ttft_seconds: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(TTFT_BUCKETS))
    inter_token_seconds: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(ITL_BUCKETS))
