"""``IndexLedger``: the pool as the rules see it in the JSON Lines store.

``JsonlStore.transact`` catches its index up with every process's lines
under the pool's ``flock`` and then hands this to a decision of
``taskpool.stores.rules``: open tasks come from the index, closed ones and
idempotent replays from the line the index located.
"""

from __future__ import annotations

from datetime import date

from taskpool.lifecycle import TaskState
from taskpool.messages import Message
from taskpool.stores.jsonl.day_files import DayFiles
from taskpool.stores.jsonl.index import KnownTask
from taskpool.stores.jsonl.tail import IndexTail
from taskpool.stores.rules import ClosedTask


class IndexLedger:
    """The rules' view of the pool, read from the index the tail keeps (see ``rules.Ledger``)."""

    def __init__(self, tail: IndexTail, files: DayFiles) -> None:
        self.tail = tail
        self.files = files

    def open_task(self, task_id: str, for_device: str | None = None) -> TaskState | None:
        return self.tail.index.open.get(task_id)  # the index keeps every device's answers

    def whole_task(self, task_id: str) -> TaskState | None:
        return self.tail.index.open.get(task_id)

    def closed_task(self, task_id: str) -> ClosedTask | None:
        if task_id in self.tail.index.open:
            return None
        known = self.tail.index.locate(task_id)
        if known is None or known.closed is None:
            return None
        return ClosedTask(self.task_at(known), known.closed)

    def sent_with_key(self, sender: str, key: str) -> Message | None:
        found = self.tail.index.locate_idempotent(sender, key)
        if found is None:
            return None
        message = self.files.message_starting_at(date.fromordinal(found[0]), found[1])
        # The index keeps a hash of each key: the line itself says whether it is this one.
        if message["from"] != sender:
            return None
        if message["meta"].get("idempotency_key") != key:
            return None
        return message

    def oldest_claimable(self, device_id: str, now: float) -> TaskState | None:
        for state in self.tail.index.pending_states(device_id, now):
            if state.any_one and state.claimer is None:
                return state
        return None

    def task_at(self, known: KnownTask) -> Message:
        """The task line the index located."""
        return self.files.message_starting_at(date.fromordinal(known.day_ordinal), known.offset)
