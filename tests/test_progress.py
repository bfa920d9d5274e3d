"""Progress bars: a first start's replay reports every byte it reads; bars show on a
terminal only, and never with ``--no-progress``."""

from __future__ import annotations

import io
import sys

from taskpool.management.progress import progress_bar, replay_bar
from taskpool.stores.jsonl import JsonlStore
from tests.support import append_messages, days_ago, message, noon


class Recorder:
    def __init__(self, total: int) -> None:
        self.total, self.read, self.closed = total, 0, False

    def update(self, count: int) -> None:
        self.read += count

    def close(self) -> None:
        self.closed = True


def test_a_first_start_reports_its_replay_byte_for_byte(pool_dir):
    append_messages(pool_dir, *(message(ts=noon(days_ago(age)), title="t") for age in (3, 2, 1)))
    size = sum(path.stat().st_size for path in pool_dir.glob("*.jsonl"))
    store = JsonlStore(pool_dir, fsync=False)
    bars: list[Recorder] = []
    store._tail.replay_progress = lambda total: bars.append(Recorder(total)) or bars[-1]
    assert len(store.pending_for("pi-1")) == 3
    assert [(bar.total, bar.read, bar.closed) for bar in bars] == [(size, size, True)]
    store.pending_for("pi-1")  # no replay the second time
    assert len(bars) == 1
    store.close()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_show_on_a_terminal_unless_told_not_to(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert not progress_bar({}, total=1, unit="B", label="x").disable
    assert not replay_bar(10).disable
    assert progress_bar({"no_progress": True}, total=1, unit="B", label="x").disable
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_bar({}, total=1, unit="B", label="x").disable
    assert replay_bar(10).disable
