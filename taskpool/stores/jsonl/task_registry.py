"""The tasks of one day file, kept in 36 bytes each once the day is over.

The index remembers every task of the horizon, open or closed, so that an
answer to any of them gets the right refusal without a scan. A week of a
fleet's history holds hundreds of thousands of tasks. Kept in a dict, each
costs about 120 bytes (a 16-byte key object, its packed record as an int,
and the dict's slot); ``compact`` moves them into flat storage instead: in
file order, the ids' 16 bytes in one string and the packed records in an
array, and for lookups the tasks' places sorted by the id's first 8 bytes,
with those 8 bytes as numbers. New tasks go into a dict, which takes them
cheaply. A finished day's tasks are compacted once its file is read; the
day being written moves its tasks every ``FLUSH_AT`` of them, so it grows by
about 36 bytes a task too. The sorted arrays are split by the id's first
byte: moving a task in shifts a 256th of the day's tasks, not all of them.

Ids that are not ``msg_`` and 32 lower-case hex digits (a hand-written line)
are kept by name in a dict of their own, whatever the day.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import sys
from array import array
from collections.abc import Iterator

KEY_BYTES = 16
#: New tasks the day being written keeps in its dict before they move into the arrays.
FLUSH_AT = 4096
#: The high half's bits below its shard's number: the id's first byte picks one of 256.
SHARD_SHIFT = 56
SHARDS = 1 << (64 - SHARD_SHIFT)
#: Up to this many tasks, a day's sorted arrays are one shard: 256 would be mostly empty.
ONE_SHARD_MAX = 4 * FLUSH_AT


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
    their high bits), and tasks are noted in file order: the dict's tasks
    all come after the arrays', and the odd ids are merged in by their
    records. A key is held in one place only: a new task goes into the
    dict, and a record noted again is changed where it is.
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
        #: Per shard (one, or 256 by the key's first byte), the compacted tasks' places
        #: ordered by the key's first 8 bytes, and those 8 bytes as numbers.
        self._sorted: list[array] = [array("I")]
        self._sorted_highs: list[array] = [array("Q")]

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
        recent = (("msg_" + key.hex(), packed) for key, packed in reversed(self._recent.items()))
        canonical = itertools.chain(recent, self._compacted_newest_first())
        if not self._named:
            return canonical
        return heapq.merge(
            canonical, reversed(self._named.items()), key=_packed_record, reverse=True
        )

    def in_file_order(self) -> Iterator[tuple[str | bytes, int]]:
        """(key, packed record) of every task, the first line first."""
        compacted = zip(self._compacted_keys(), self._packed, strict=True)
        canonical = itertools.chain(compacted, self._recent.items())
        if not self._named:
            return canonical
        return heapq.merge(canonical, self._named.items(), key=_packed_record)

    def _compacted_newest_first(self) -> Iterator[tuple[str, int]]:
        if not self._packed:
            return
        digits, packed = self._keys.hex(), self._packed  # one call for all the ids' digits
        width = 2 * KEY_BYTES
        for place in reversed(range(len(packed))):
            yield "msg_" + digits[place * width : place * width + width], packed[place]

    def compact_due(self, *, day_over: bool) -> bool:
        """Whether the dict's tasks should move into the arrays now.

        A finished day moves whatever its dict holds (a late line, now and
        then); the day being written waits for ``FLUSH_AT`` new tasks.
        """
        return len(self._recent) >= (1 if day_over else FLUSH_AT)

    def compact(self) -> None:
        """Move the dict's tasks after those compacted already (file order), and into the
        sorted arrays: one by one when they are few against those, else by sorting again."""
        recent = self._recent
        if not recent:
            return
        first_place = len(self._packed)
        new_keys = b"".join(recent)
        self._keys += new_keys
        self._packed.extend(recent.values())
        self._recent = {}
        total = len(self._packed)
        if len(recent) > first_place // 4 or (len(self._sorted) == 1 and total > ONE_SHARD_MAX):
            self._sort_again()
            return
        shift = SHARD_SHIFT if len(self._sorted) == SHARDS else 64
        all_places, all_highs = self._sorted, self._sorted_highs
        for place, high in enumerate(_highs_of(new_keys), first_place):
            shard = high >> shift
            highs = all_highs[shard]
            at = bisect.bisect_right(highs, high)
            highs.insert(at, high)
            all_places[shard].insert(at, place)

    def _sort_again(self) -> None:
        highs = _highs_of(self._keys)
        places = array("I", sorted(range(len(highs)), key=highs.__getitem__))
        sorted_highs = array("Q", map(highs.__getitem__, places))
        if len(places) <= ONE_SHARD_MAX:
            self._sorted, self._sorted_highs = [places], [sorted_highs]
            return
        bounds = [bisect.bisect_left(sorted_highs, shard << SHARD_SHIFT) for shard in range(SHARDS)]
        bounds.append(len(places))
        self._sorted = [places[low:high] for low, high in itertools.pairwise(bounds)]
        self._sorted_highs = [sorted_highs[low:high] for low, high in itertools.pairwise(bounds)]

    def take_later(self, later: TaskRegistry) -> None:
        """Take in the tasks of ``later``, a registry of the lines after this one's."""
        for key, packed in later.in_file_order():
            self.note(key, packed)

    def named_ids(self) -> set[str]:
        """The ids held by name (those that are not canonical)."""
        return set(self._named)

    def id_highs(self) -> set[int]:
        """The first 8 bytes, as numbers, of every canonical id held."""
        highs = set().union(*self._sorted_highs)
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
        shard = high >> SHARD_SHIFT if len(self._sorted) == SHARDS else 0
        sorted_highs = self._sorted_highs[shard]
        at = bisect.bisect_left(sorted_highs, high)
        while at < len(sorted_highs) and sorted_highs[at] == high:
            place = self._sorted[shard][at]
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
