"""``gc_paused``: no cyclic garbage collection while a replay builds the index.

A replay keeps hundreds of thousands of objects for a while (open tasks,
their messages, answers waiting for their fold), and every few hundred that
survive set off a collection that walks them, and the whole server's objects
now and then. Measured at 1M lines that is 4% of a worker's replay and 6% of
the server process's own share. Nothing a replay makes holds a reference
cycle (messages are plain dicts, the index's objects point one way), so
pausing collection frees the same memory at the same moment; the collector
runs again, as configured, once the replay is done.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block, then restore it if it was enabled."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
