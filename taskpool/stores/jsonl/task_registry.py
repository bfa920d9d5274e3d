"""The tasks of one day file, kept in 36 bytes each once the day is over.

The index remembers every task of the horizon, open or closed, so that an
answer to any of them gets the right refusal without a scan. A week of a
fleet's history holds hundreds of thousands of tasks. Kept in a dict, each
costs about 120 bytes (a 16-byte key object, its packed record as an int,
and the dict's slot); ``compact`` moves them into flat storage instead: in
file order, the ids' 16 bytes in one string and the packed records in an
array, and for lookups the tasks' places sorted by the id's first 8 bytes,
with those 8 bytes as numbers. A day's tasks are compacted once the day is
over and its file is read; the day being written keeps its dict, which
takes new tasks cheaply.

Ids that are not ``msg_`` and 32 lower-case hex digits (a hand-written line)
are kept by name in a dict of their own, whatever the day.
"""

from __future__ import annotations

import bisect
import heapq
import sys
from array import array
from collections.abc import Iterator

KEY_BYTES = 16


def task_key(task_id: str) -> str | bytes:
    """The registry's key for a task id: its 16 bytes for ``msg_<32 hex>``, else the id itself."""
    if len(task_id) == 36 and task_id.startswith("msg_"):
        digits = task_id[4:]
        try:
            key = bytes.fromhex(digits)
        except ValueError:
            return task_id
        # fromhex also takes capitals and spaces: only the canonical form maps to bytes.
        if key.hex() == digits:
            return key
    return task_id


class TaskRegistry:
    """Task key (16 bytes, or an odd id's text) -> the task's packed record.

    Packed records must sort as their lines do in the file (the offset in
    their high bits): the registry gives tasks back in file order by them.
    A key is held in one place only: a new task goes into the dict, and a
    record noted again is changed where it is.
    """

    __slots__ = ("_recent", "_named", "_keys", "_packed", "_sorted", "_sorted_highs")

    def __init__(self) -> None:
        #: Tasks with canonical ids not compacted yet, in file order.
        self._recent: dict[bytes, int] = {}
        #: Tasks whose id is not canonical, by id, in file order.
        self._named: dict[str, int] = {}
        #: Compacted tasks in file order: their keys end to end, and their packed records.
        self._keys = b""
        self._packed = array("Q")
        #: The compacted tasks' places, ordered by the key's first 8 bytes, and those bytes.
        self._sorted = array("I")
        self._sorted_highs = array("Q")

    def __len__(self) -> int:
        return len(self._recent) + len(self._named) + len(self._packed)

    def __contains__(self, key: str | bytes) -> bool:
        # Looked up for every task line a replay reads, in every day: the dicts first.
        if key in self._recent or key in self._named:
            return True
        return bool(self._packed) and isinstance(key, bytes) and self._find(key) >= 0

    def get(self, key: str | bytes) -> int | None:
        """The packed record of the task with ``key``, or ``None``."""
        if not isinstance(key, bytes):
            return self._named.get(key)
        packed = self._recent.get(key)
        if packed is None and self._packed:
            place = self._find(key)
            if place >= 0:
                return self._packed[place]
        return packed

    def note(self, key: str | bytes, packed: int) -> None:
        """Note the task's packed record: a new task's, or a new one for a task already noted."""
        if not isinstance(key, bytes):
            self._named[key] = packed
            return
        if self._packed and key not in self._recent:
            place = self._find(key)
            if place >= 0:
                self._packed[place] = packed
                return
        self._recent[key] = packed

    def newest_first(self) -> Iterator[tuple[str, int]]:
        """(task id, packed record) of every task, the last line first."""
        parts: list[Iterator[tuple[str, int]]] = []
        if self._packed:
            digits, packed = self._keys.hex(), self._packed  # one call for all the ids' digits
            width = 2 * KEY_BYTES
            parts.append(
                ("msg_" + digits[place * width : place * width + width], packed[place])
                for place in reversed(range(len(packed)))
            )
        if self._recent:
            parts.append(
                ("msg_" + key.hex(), packed) for key, packed in reversed(self._recent.items())
            )
        if self._named:
            parts.append(reversed(self._named.items()))
        if len(parts) == 1:
            return parts[0]  # a day compacted, or the day being written: nothing to merge
        return heapq.merge(*parts, key=_packed_record, reverse=True)

    def in_file_order(self) -> Iterator[tuple[str | bytes, int]]:
        """(key, packed record) of every task, the first line first."""
        compacted = zip(self._compacted_keys(), self._packed, strict=True)
        return heapq.merge(compacted, self._recent.items(), self._named.items(), key=_packed_record)

    def compact_due(self) -> bool:
        """Whether the dict holds enough tasks to be worth rebuilding the arrays for."""
        return len(self._recent) > len(self._packed) // 4

    def compact(self) -> None:
        """Move the dict's tasks after those compacted already (file order), and sort again."""
        if not self._recent:
            return
        self._keys += b"".join(self._recent)
        self._packed.extend(self._recent.values())
        highs = _highs_of(self._keys)
        self._sorted = array("I", sorted(range(len(highs)), key=highs.__getitem__))
        self._sorted_highs = array("Q", map(highs.__getitem__, self._sorted))
        self._recent = {}

    def take_later(self, later: TaskRegistry) -> None:
        """Take in the tasks of ``later``, a registry of the lines after this one's."""
        for key, packed in later.in_file_order():
            self.note(key, packed)

    def named_ids(self) -> set[str]:
        """The ids held by name (those that are not canonical)."""
        return set(self._named)

    def id_highs(self) -> set[int]:
        """The first 8 bytes, as numbers, of every canonical id held."""
        highs = set(self._sorted_highs)
        highs.update(_highs_of(b"".join(self._recent)))
        return highs

    def keys_with_highs(self, highs: set[int]) -> Iterator[bytes]:
        """The canonical keys held whose first 8 bytes, as a number, are in ``highs``."""
        yield from (key for key in self._recent if int.from_bytes(key[:8]) in highs)
        for place, high in enumerate(_highs_of(self._keys)):
            if high in highs:
                yield self._keys[place * KEY_BYTES : (place + 1) * KEY_BYTES]

    def _compacted_keys(self) -> Iterator[bytes]:
        keys = self._keys
        return (keys[at : at + KEY_BYTES] for at in range(0, len(keys), KEY_BYTES))

    def _find(self, key: bytes) -> int:
        """Where ``key`` is among the compacted tasks, or -1."""
        high = int.from_bytes(key[:8])
        sorted_highs = self._sorted_highs
        at = bisect.bisect_left(sorted_highs, high)
        while at < len(sorted_highs) and sorted_highs[at] == high:
            place = self._sorted[at]
            if self._keys[place * KEY_BYTES : (place + 1) * KEY_BYTES] == key:
                return place
            at += 1
        return -1


def _highs_of(keys: bytes) -> array:
    """The first 8 bytes of each 16-byte key in ``keys``, as ``int.from_bytes`` reads them."""
    halves = array("Q", keys)
    if sys.byteorder == "little":
        halves.byteswap()  # the keys' bytes are big-endian numbers
    return halves[0::2]


def _packed_record(entry: tuple[str | bytes, int]) -> int:
    return entry[1]
