"""Readings of the machine as this process sees it: the container's CPU and memory (cgroup v1 or v2,
the host's when there is no cgroup), the data directory's disk, the process itself, GPUs."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

_CGROUP = Path("/sys/fs/cgroup")
_UNLIMITED = 1 << 60
_DIR_SIZE_EVERY_S = 60.0
_DIR_SIZE_MAX_ENTRIES = 200_000


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None or not text or text == "max":
        return None
    try:
        return int(text.split()[0])
    except ValueError:
        return None


def _stat_field(path: Path, name: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            try:
                return int(value)
            except ValueError:
                return None
    return None


@dataclass(slots=True, frozen=True)
class CgroupFiles:
    """Where this container's accounting lives; None where the kernel has no such file."""

    root: Path = _CGROUP

    @property
    def v2(self) -> bool:
        return (self.root / "cgroup.controllers").exists()

    def cpu_usage_seconds(self) -> float | None:
        if self.v2:
            usec = _stat_field(self.root / "cpu.stat", "usage_usec")
            return None if usec is None else usec / 1e6
        nsec = _read_int(self.root / "cpuacct" / "cpuacct.usage")
        return None if nsec is None else nsec / 1e9

    def cpu_quota_cores(self) -> float | None:
        if self.v2:
            text = _read(self.root / "cpu.max")
            if not text:
                return None
            quota, _, period = text.partition(" ")
            if quota == "max" or not period:
                return None
            return int(quota) / int(period)
        quota_us = _read_int(self.root / "cpu" / "cpu.cfs_quota_us")
        period_us = _read_int(self.root / "cpu" / "cpu.cfs_period_us")
        if quota_us is None or period_us is None or quota_us <= 0:
            return None
        return quota_us / period_us

    def memory(self) -> tuple[int, int | None] | None:
        """(working set, limit or None): usage less inactive page cache, as the kubelet counts it."""
        if self.v2:
            usage = _read_int(self.root / "memory.current")
            inactive = _stat_field(self.root / "memory.stat", "inactive_file") or 0
            limit = _read_int(self.root / "memory.max")
        else:
            usage = _read_int(self.root / "memory" / "memory.usage_in_bytes")
            inactive = _stat_field(self.root / "memory" / "memory.stat", "total_inactive_file") or 0
            limit = _read_int(self.root / "memory" / "memory.limit_in_bytes")
        if usage is None:
            return None
        if limit is not None and limit >= _UNLIMITED:
            limit = None
        return max(usage - inactive, 0), limit


@dataclass(slots=True, frozen=True)
class GpuReading:
    index: int
    name: str
    utilization_ratio: float
    memory_used_bytes: int
    memory_total_bytes: int


@dataclass(slots=True, frozen=True)
class ResourceSample:
    """One reading; ratios are 0..1, None where the value cannot be known yet."""

    at: float  # time.monotonic()
    cpu_ratio: float | None
    cpu_cores: float
    memory_used_bytes: int
    memory_limit_bytes: int
    disk_used_bytes: int
    disk_total_bytes: int
    data_dir_bytes: int
    process_rss_bytes: int
    process_cpu_seconds: float
    process_open_fds: int
    process_threads: int
    gpus: tuple[GpuReading, ...] = ()

    @property
    def memory_ratio(self) -> float:
        return self.memory_used_bytes / self.memory_limit_bytes if self.memory_limit_bytes else 0.0

    @property
    def disk_ratio(self) -> float:
        return self.disk_used_bytes / self.disk_total_bytes if self.disk_total_bytes else 0.0


class _Nvml:
    """GPU readings through NVML (nvidia-ml-py) when a driver is present; nothing otherwise."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self._nvml = pynvml
        except Exception:  # noqa: BLE001 - no driver, no library, no GPU: no GPU metrics
            self._handles = []

    def read(self) -> tuple[GpuReading, ...]:
        nvml = self._nvml
        if nvml is None:
            return ()
        readings = []
        for index, handle in enumerate(self._handles):
            try:
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                name = nvml.nvmlDeviceGetName(handle)
            except Exception:  # noqa: BLE001 - a GPU that stops answering is left out of this reading
                log.debug("GPU %d did not answer", index)
                continue
            name = name.decode() if isinstance(name, bytes) else str(name)
            readings.append(GpuReading(index, name, util.gpu / 100.0, int(memory.used), int(memory.total)))
        return tuple(readings)


def dir_size(path: Path, max_entries: int = _DIR_SIZE_MAX_ENTRIES) -> int:
    """Bytes of the regular files under `path` (links not followed), counting at most `max_entries`."""
    total, seen, stack = 0, 0, [path]
    while stack and seen < max_entries:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    seen += 1
                    if seen > max_entries:
                        break
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


@dataclass
class ResourceSampler:
    """Takes readings; CPU use is measured since the previous reading (the first: since construction)."""

    data_dir: Path
    cgroup: CgroupFiles = field(default_factory=CgroupFiles)
    _process: psutil.Process = field(default_factory=psutil.Process, init=False)
    _gpus: _Nvml | None = field(default=None, init=False)
    _last_cpu: tuple[float, float] | None = field(default=None, init=False)  # (monotonic, cpu seconds)
    _dir_size: tuple[float, int] | None = field(default=None, init=False)
    latest: ResourceSample | None = field(default=None, init=False)
    started_at: float = field(init=False)  # the process's start, seconds since the epoch
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.started_at = self._process.create_time()
        self._cpu_ratio(time.monotonic(), self._cores())  # the baseline: the first reading has a CPU figure

    def sample(self) -> ResourceSample:
        """A new reading (the monitor thread and a scrape may both ask: one at a time)."""
        with self._lock:
            return self._sample()

    def _sample(self) -> ResourceSample:
        now = time.monotonic()
        if self._gpus is None:
            self._gpus = _Nvml()
        cores = self._cores()
        cpu_ratio = self._cpu_ratio(now, cores)
        memory = self.cgroup.memory()
        host = psutil.virtual_memory()
        if memory is None:
            used, limit = host.total - host.available, host.total
        else:
            used, limit = memory[0], min(memory[1] or host.total, host.total)
        disk = shutil.disk_usage(self.data_dir if self.data_dir.exists() else self.data_dir.parent)
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            times = self._process.cpu_times()
            fds = self._process.num_fds()
            threads = self._process.num_threads()
        sample = ResourceSample(
            at=now,
            cpu_ratio=cpu_ratio,
            cpu_cores=cores,
            memory_used_bytes=used,
            memory_limit_bytes=limit,
            disk_used_bytes=disk.total - disk.free,
            disk_total_bytes=disk.total,
            data_dir_bytes=self._data_dir_bytes(now),
            process_rss_bytes=rss,
            process_cpu_seconds=times.user + times.system,
            process_open_fds=fds,
            process_threads=threads,
            gpus=self._gpus.read(),
        )
        self.latest = sample
        return sample

    def _cores(self) -> float:
        available = float(len(os.sched_getaffinity(0)))
        quota = self.cgroup.cpu_quota_cores()
        return min(available, quota) if quota else available

    def _cpu_ratio(self, now: float, cores: float) -> float | None:
        used = self.cgroup.cpu_usage_seconds()
        if used is None:  # no cgroup accounting: the host's CPU use since the last call
            percent = psutil.cpu_percent(interval=None)
            first = self._last_cpu is None
            self._last_cpu = (now, 0.0)
            return None if first else percent / 100.0
        last, self._last_cpu = self._last_cpu, (now, used)
        if last is None or now <= last[0]:
            return None
        return max(0.0, min(1.0, (used - last[1]) / ((now - last[0]) * cores)))

    def _data_dir_bytes(self, now: float) -> int:
        if self._dir_size is None or now - self._dir_size[0] >= _DIR_SIZE_EVERY_S:
            self._dir_size = (now, dir_size(self.data_dir))
        return self._dir_size[1]
