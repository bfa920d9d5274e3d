"""A one-line description of the machine a run was made on."""

from __future__ import annotations

import os
import platform
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


def describe(work_dir: Path) -> str:
    device, kind = _mount_of(work_dir)
    return (
        f"{os.cpu_count()} CPUs ({_cpu_model()}), {_memory_total()}, "
        f"disk {device} ({kind}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, Django {django.get_version()}"
    )
