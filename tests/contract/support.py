"""What the store contract's tests share: a clock they drive, and the pool's messages."""

from __future__ import annotations

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
