"""How a message is shown in the admin's tables: one row, with its links."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from django.urls import reverse

from taskpool.admin.access import can_read_day_files, can_use_tasks
from taskpool.messages import Message, response_status


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A message, with the links the viewer may follow."""

    message: Message
    cursor: str | None
    #: The task the message is or answers, when the viewer may open threads.
    thread_url: str | None
    #: The message's own page (its JSON), when the viewer may read day files.
    message_url: str | None

    @property
    def time(self) -> str:
        """``HH:MM:SS`` of the UTC timestamp (the day is the page's)."""
        ts = self.message["ts"]
        return ts[11:19] if len(ts) >= 19 else ts

    @property
    def status(self) -> str | None:
        return response_status(self.message)

    @property
    def sender(self) -> str:
        return self.message["from"]


def thread_id_of(message: Message) -> str | None:
    """The id of the task a message is or answers."""
    if message["type"] == "task":
        task_id = message["id"]
    elif message["type"] == "response" and message["parent_id"]:
        task_id = message["parent_id"]
    else:
        return None
    return task_id if "/" not in task_id else None  # not a path segment: no page


def message_rows(entries: list[Any], user: Any, *, current_app: str) -> list[MessageRow]:
    """Rows for ``PageEntry``s (or bare messages), with the links ``user`` may follow on the
    admin site named ``current_app``."""
    threads = can_use_tasks(user)
    raw = can_read_day_files(user)
    rows = []
    for entry in entries:
        message, cursor = (
            (entry.message, entry.cursor) if hasattr(entry, "cursor") else (entry, None)
        )
        thread_id = thread_id_of(message) if threads else None
        rows.append(
            MessageRow(
                message=message,
                cursor=cursor,
                thread_url=reverse(
                    "admin:taskpool_task_thread", args=[thread_id], current_app=current_app
                )
                if thread_id
                else None,
                message_url=reverse(
                    "admin:taskpool_dayfile_message",
                    args=[message["ts"][:10], cursor],
                    current_app=current_app,
                )
                if raw and cursor is not None
                else None,
            )
        )
    return rows


def response_status_counts(responses: list[Message]) -> list[tuple[str, int]]:
    """How many of ``responses`` have each status, by status name (those without one left out)."""
    counts = Counter(response_status(message) for message in responses)
    return sorted((status, count) for status, count in counts.items() if status)


def pretty_json(value: Any) -> str:
    """JSON for people: indented, keys in the order stored, non-ASCII as is."""
    return json.dumps(value, indent=2, ensure_ascii=False)
