from __future__ import annotations

from pathlib import Path

import pytest

from moltbot import resources


def test_cgroup_memory_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    limit = tmp_path / "memory.max"
    monkeypatch.setattr(resources, "_CGROUP_V2_MEMORY", limit)
    monkeypatch.setattr(resources, "_CGROUP_V1_MEMORY", tmp_path / "absent")
    limit.write_text("max\n")
    assert resources.cgroup_memory_limit() is None
    limit.write_text("2147483648\n")
    assert resources.cgroup_memory_limit() == 2 << 30
    detected = resources.detect(tmp_path)
    assert detected.memory_bytes <= 2 << 30


def test_cgroup_cpu_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = tmp_path / "cpu.max"
    monkeypatch.setattr(resources, "_CGROUP_V2_CPU", cpu)
    cpu.write_text("max 100000\n")
    assert resources.cgroup_cpu_limit() is None
    cpu.write_text("150000 100000\n")
    assert resources.cgroup_cpu_limit() == 1.5
    assert resources.detect(tmp_path).physical_cores == 1


def test_detect_reads_this_machine(tmp_path: Path) -> None:
    found = resources.detect(tmp_path / "not-yet-created")
    assert found.physical_cores >= 1 and found.memory_bytes > 0 and found.disk_free_bytes > 0
