"""A one-line description of the machine a run was made on."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import django


def _mount_of(path: Path) -> tuple[str, str]:
    """The device and filesystem type of the mount holding ``path``."""
    best = ("", "?", "?")
    resolved = str(path.resolve())
    with open("/proc/mounts") as mounts:
        for line in mounts:
            device, point, kind = line.split()[:3]
            inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[0]):
                best = (point, device, kind)
    return best[1], best[2]


def _memory_total() -> str:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB RAM"
    return "? RAM"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def python_speed(steps: int = 1_000_000, repeats: int = 5) -> float:
    """Seconds a plain Python loop of ``steps`` additions takes, best of ``repeats``.

    The same VM type runs Python several times faster on some days than on
    others; this puts a number on it, so that runs on different days can be
    told apart before their figures are compared.
    """
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for step in range(steps):
            total += step
        best = min(best, time.perf_counter() - started)
    return best


def describe(work_dir: Path) -> str:
    device, kind = _mount_of(work_dir)
    return (
        f"{os.cpu_count()} CPUs ({_cpu_model()}), {_memory_total()}, "
        f"disk {device} ({kind}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, Django {django.get_version()}; "
        f"a 1M-step Python loop in {python_speed() * 1000:.0f} ms (best of 5)"
    )
