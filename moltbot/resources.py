"""Detect the machine's resources: cores, memory (cgroup-aware), free disk, GPU."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import psutil

_CGROUP_V2_MEMORY = Path("/sys/fs/cgroup/memory.max")
_CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
_CGROUP_V2_CPU = Path("/sys/fs/cgroup/cpu.max")
_NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")
_UNLIMITED = 1 << 60


@dataclass(slots=True, frozen=True)
class Resources:
    """What the machine offers this process."""

    physical_cores: int
    logical_cores: int
    memory_bytes: int
    disk_free_bytes: int
    gpu_count: int

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / (1 << 30)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text.split()[0])
    except ValueError:
        return None


def cgroup_memory_limit() -> int | None:
    """The container's memory limit in bytes, or None when unlimited."""
    for path in (_CGROUP_V2_MEMORY, _CGROUP_V1_MEMORY):
        limit = _read_int(path)
        if limit is not None and limit < _UNLIMITED:
            return limit
    return None


def cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup v2 quota, or None when unlimited."""
    try:
        quota, period = _CGROUP_V2_CPU.read_text().split()
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def _gpu_count() -> int:
    if _NVIDIA_PROC.is_dir():
        return sum(1 for _ in _NVIDIA_PROC.iterdir())
    return 1 if shutil.which("nvidia-smi") and Path("/dev/nvidia0").exists() else 0


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def detect(data_dir: Path) -> Resources:
    """Read the resources available to this process now."""
    logical = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    cpu_quota = cgroup_cpu_limit()
    if cpu_quota is not None:
        physical = max(1, min(physical, int(cpu_quota)))
        logical = max(1, min(logical, int(cpu_quota + 0.999)))
    memory = psutil.virtual_memory().total
    limit = cgroup_memory_limit()
    if limit is not None:
        memory = min(memory, limit)
    disk = shutil.disk_usage(_nearest_existing(data_dir)).free
    return Resources(physical, logical, memory, disk, _gpu_count())
