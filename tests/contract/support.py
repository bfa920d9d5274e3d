"""What the store contract's tests share: a clock they drive, the pool's messages, and a
fault in one job task's schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from taskpool.messages import Message
from taskpool.stores.base import BaseStore

START = 1_780_000_000.0  # 2026-05-28T20:26:40Z
DAY = 86400


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def stored(pool: BaseStore) -> list[Message]:
    """Every message of the pool, in pool order, read through the store's log."""
    found: list[Message] = []
    cursor = None
    while True:
        page = pool.messages_after(cursor, limit=1000)
        found += page.results
        if not page.has_more:
            return found
        cursor = page.next_cursor


def transition_failing_for(pool: BaseStore, task_id: str) -> Callable[..., Any]:
    """``pool.transition``, but failing for ``task_id``: a schedule that cannot be computed."""
    transition = pool.transition

    def faulty(asked: str, devices: Any) -> Any:
        if asked == task_id:
            raise ValueError("a schedule that cannot be computed")
        return transition(asked, devices)

    return faulty
