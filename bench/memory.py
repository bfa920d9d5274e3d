"""Resident memory after start-up, measured in a fresh process: ``python -m bench.memory DIR``.

The process starts Django with the benchmark settings and the API imported,
notes its RSS, builds the store's index from the day files in ``DIR`` (one
``pending_for``), collects garbage, and prints its RSS again as JSON, with
the deep size of the index's parts.
"""

from __future__ import annotations

import gc
import os
import sys

import orjson


def resident_bytes() -> int:
    """``VmRSS`` of this process, from ``/proc/self/status``."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def deep_size(root: object) -> int:
    """Bytes held by ``root`` and everything it reaches, each object counted once."""
    seen: set[int] = set()
    total = 0
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif hasattr(item, "__slots__"):
            stack.extend(getattr(item, name) for name in item.__slots__ if hasattr(item, name))
        elif hasattr(item, "__dict__"):
            stack.append(item.__dict__)
    return total


def main(directory: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ["BENCH_DATA_DIR"] = directory
    import django

    django.setup()
    import taskpool.api.views  # noqa: F401 - the app's whole stack, as a server has it
    from taskpool.stores import get_store

    gc.collect()
    before = resident_bytes()
    store = get_store()
    store.pending_for("dev-0000")
    gc.collect()
    after = resident_bytes()
    index = store._index  # noqa: SLF001 - the benchmark looks inside on purpose
    figures = {
        "rss_before": before,
        "rss_after": after,
        "lines": store.stats()["lines"],
        "task_registry": deep_size(getattr(index, "days", {})),
        "open_states": deep_size(index.open),
    }
    broadcasts = getattr(index, "broadcasts", None)
    if broadcasts is not None:
        # Their states are the open tasks' (counted above): the positions and spans only.
        figures["broadcast_spans"] = deep_size(
            [broadcasts.positions, broadcasts.done, broadcasts.done_counts]
        )
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
