"""The idempotency keys of one day file's lines, kept in 16 bytes each.

An agent keys every answer it sends, and a key must be found again for as
long as the task may be answered (``TASK_TTL``): a week of a fleet's
history holds hundreds of thousands of keys. Kept as Python strings in a
dict, each cost about 400 bytes of the server's memory; here each is a
64-bit hash of the sender and the key, with the offset of the line sent
with it, in two sorted arrays (16 bytes), once its day is no longer the
newest. The newest day's keys stay in a dict, which takes new ones
cheaply. A hash found is only a candidate: the reader checks the line at
its offset (``JsonlLedger.sent_with_key``), so two keys that share a hash
can cost a replay, never a wrong answer.
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
from collections.abc import Iterator


def key_hash(sender: str, key: str) -> int:
    """The 64 bits a sender's key is kept by (the same in every process, unlike ``hash``)."""
    digest = hashlib.blake2b(f"{sender}\n{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class IdempotencyKeys:
    """Key hash -> offset of the first line sent with the key, in one day file."""

    __slots__ = ("_recent", "_hashes", "_offsets")

    def __init__(self) -> None:
        self._recent: dict[int, int] = {}
        self._hashes = array("Q")  # sorted
        self._offsets = array("Q")

    def __len__(self) -> int:
        return len(self._recent) + len(self._hashes)

    def get(self, hashed: int) -> int | None:
        offset = self._recent.get(hashed)
        if offset is not None:
            return offset
        place = bisect.bisect_left(self._hashes, hashed)
        if place < len(self._hashes) and self._hashes[place] == hashed:
            return self._offsets[place]
        return None

    def add(self, hashed: int, offset: int) -> None:
        """Note ``offset`` for ``hashed`` unless a line before it had the hash (the first counts)."""
        if self._hashes and self.get(hashed) is not None:
            return
        self._recent.setdefault(hashed, offset)

    def items(self) -> Iterator[tuple[int, int]]:
        yield from zip(self._hashes, self._offsets, strict=True)
        yield from self._recent.items()

    def take_later(self, later: IdempotencyKeys) -> None:
        """Add the keys of lines read after these (another process read them)."""
        for hashed, offset in later.items():
            self.add(hashed, offset)

    def seal(self) -> None:
        """Move the keys taken so far into the sorted arrays: their day takes few new lines."""
        recent = self._recent
        if not recent:
            return
        if self._hashes:  # sealed before (a line came late to an older day): all again
            recent = {**dict(zip(self._hashes, self._offsets, strict=True)), **recent}
        hashes = sorted(recent)  # sorting bare ints, not pairs: a day's keys in milliseconds
        self._hashes = array("Q", hashes)
        self._offsets = array("Q", map(recent.__getitem__, hashes))
        self._recent = {}

    def __getstate__(self) -> tuple[dict[int, int], array, array]:
        return self._recent, self._hashes, self._offsets

    def __setstate__(self, state: tuple[dict[int, int], array, array]) -> None:
        self._recent, self._hashes, self._offsets = state
