"""Resource readings: the container's CPU and memory from cgroup v1 and v2 files, disk, the process."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from moltbot.engine.stats import LatencyHistogram
from moltbot.monitor.metrics import ResourceCollector
from moltbot.monitor.sampler import CgroupFiles, GpuReading, ResourceSampler, dir_size


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2(tmp_path: Path) -> None:
    write(tmp_path, "cgroup.controllers", "cpu memory\n")
    write(tmp_path, "cpu.stat", "usage_usec 2500000\nuser_usec 2000000\n")
    write(tmp_path, "cpu.max", "150000 100000\n")
    write(tmp_path, "memory.current", "1000000000\n")
    write(tmp_path, "memory.stat", "anon 700000000\ninactive_file 200000000\n")
    write(tmp_path, "memory.max", "2000000000\n")
    files = CgroupFiles(tmp_path)
    assert files.cpu_usage_seconds() == 2.5
    assert files.cpu_quota_cores() == 1.5
    assert files.memory() == (800_000_000, 2_000_000_000)
    write(tmp_path, "memory.max", "max\n")
    write(tmp_path, "cpu.max", "max 100000\n")
    assert files.memory() == (800_000_000, None)
    assert files.cpu_quota_cores() is None


def test_cgroup_v1(tmp_path: Path) -> None:
    write(tmp_path, "cpuacct/cpuacct.usage", "3000000000\n")
    write(tmp_path, "cpu/cpu.cfs_quota_us", "-1\n")
    write(tmp_path, "cpu/cpu.cfs_period_us", "100000\n")
    write(tmp_path, "memory/memory.usage_in_bytes", "500000000\n")
    write(tmp_path, "memory/memory.stat", "inactive_file 1\ntotal_inactive_file 100000000\n")
    write(tmp_path, "memory/memory.limit_in_bytes", "9223372036854771712\n")
    files = CgroupFiles(tmp_path)
    assert files.cpu_usage_seconds() == 3.0
    assert files.cpu_quota_cores() is None
    assert files.memory() == (400_000_000, None)


def test_no_cgroup_falls_back_to_the_host(tmp_path: Path) -> None:
    sampler = ResourceSampler(tmp_path, CgroupFiles(tmp_path / "absent"))
    sampler.sample()
    second = sampler.sample()
    assert second.cpu_ratio is not None and 0 <= second.cpu_ratio <= 1
    assert 0 < second.memory_used_bytes <= second.memory_limit_bytes
    assert second.process_rss_bytes > 0 and second.process_threads >= 1 and second.process_open_fds >= 3


def test_container_cpu_is_usage_over_time_and_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cgroup = tmp_path / "cg"
    write(cgroup, "cgroup.controllers", "cpu\n")
    write(cgroup, "cpu.max", "200000 100000\n")  # 2 cores
    write(cgroup, "cpu.stat", "usage_usec 0\n")
    clock = iter([100.0, 110.0])  # the baseline at construction, then one reading
    monkeypatch.setattr("moltbot.monitor.sampler.time.monotonic", lambda: next(clock))
    monkeypatch.setattr("moltbot.monitor.sampler.os.sched_getaffinity", lambda _: set(range(8)))
    sampler = ResourceSampler(tmp_path, CgroupFiles(cgroup))
    write(cgroup, "cpu.stat", "usage_usec 15000000\n")  # 15 CPU-seconds in 10 s on 2 cores
    sample = sampler.sample()
    assert sample.cpu_cores == 2
    assert sample.cpu_ratio == pytest.approx(0.75)


def test_disk_and_data_dir_size(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * 1000)
    (tmp_path / "g").write_bytes(b"y" * 24)
    os.symlink("/etc", tmp_path / "link")  # not followed
    assert dir_size(tmp_path) == 1024
    sample = ResourceSampler(tmp_path).sample()
    assert sample.data_dir_bytes == 1024
    assert 0 < sample.disk_used_bytes < sample.disk_total_bytes


def test_dir_size_is_bounded(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / str(i)).write_bytes(b"z")
    assert dir_size(tmp_path, max_entries=10) <= 10


def test_latency_histogram_buckets_are_cumulative() -> None:
    histogram = LatencyHistogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert histogram.total == pytest.approx(2.65)


def test_gpu_readings_through_nvml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: None  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: 1  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: f"handle{i}"  # type: ignore[attr-defined]
    fake.nvmlDeviceGetUtilizationRates = lambda _: SimpleNamespace(gpu=37, memory=5)  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMemoryInfo = lambda _: SimpleNamespace(used=2 << 30, total=80 << 30)  # type: ignore[attr-defined]
    fake.nvmlDeviceGetName = lambda _: b"NVIDIA H100"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = ResourceSampler(tmp_path)
    assert sampler.sample().gpus == (GpuReading(0, "NVIDIA H100", 0.37, 2 << 30, 80 << 30),)
    families = {m.name: m for m in ResourceCollector(sampler).collect()}
    assert families["moltbot_gpu_utilization_ratio"].samples[0].value == 0.37
    assert families["moltbot_gpu_memory_total_bytes"].samples[0].labels == {"gpu": "0", "name": "NVIDIA H100"}


def test_no_gpu_no_gpu_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = types.ModuleType("pynvml")

    def no_driver() -> None:
        raise OSError("NVML Shared Library Not Found")

    broken.nvmlInit = no_driver  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    sampler = ResourceSampler(tmp_path)
    assert sampler.sample().gpus == ()
    names = {m.name for m in ResourceCollector(sampler).collect()}
    assert "moltbot_cpu_usage_ratio" in names and not any("gpu" in name for name in names)
