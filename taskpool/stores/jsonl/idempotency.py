"""The idempotency keys of one day file's lines, kept in 16 bytes each.

An agent keys every answer it sends, and a key must be found again for as
long as the task may be answered (``TASK_TTL``): a week of a fleet's
history holds hundreds of thousands of keys. Kept as Python strings in a
dict, each cost about 400 bytes of the server's memory; here each is a
64-bit hash of the sender and the key, with the offset of the line sent
with it, in sorted arrays (16 bytes). New keys wait in a small dict, which
takes them cheaply, and move into the arrays every ``FLUSH_AT`` keys, so the
day being written grows by about 16 bytes a key too, not by the 120 a dict
entry costs. The arrays are split by the hash's first byte: moving a key in
shifts a 256th of the day's keys, a few milliseconds for 4,096 keys even
with a million in the day. A hash found is only a candidate: the reader
checks the line at its offset (``JsonlLedger.sent_with_key``), so two keys
that share a hash can cost a replay, never a wrong answer.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from array import array
from collections.abc import Iterator

#: Keys kept in the dict before they move into the sorted arrays.
FLUSH_AT = 4096
#: The hash's bits below its shard's number: its first byte picks one of 256 shards.
SHARD_SHIFT = 56
SHARDS = 1 << (64 - SHARD_SHIFT)


def key_hash(sender: str, key: str) -> int:
    """The 64 bits a sender's key is kept by (the same in every process, unlike ``hash``)."""
    digest = hashlib.blake2b(f"{sender}\n{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class IdempotencyKeys:
    """Key hash -> offset of the first line sent with the key, in one day file.

    The first line counts: of two offsets for one hash, the smaller one.
    """

    __slots__ = ("_recent", "_hashes", "_offsets")

    def __init__(self) -> None:
        self._recent: dict[int, int] = {}
        #: Per shard, sorted hashes and their offsets (empty until the first flush).
        self._hashes: list[array] = []
        self._offsets: list[array] = []

    def __len__(self) -> int:
        """How many hashes are noted (one in the dict and the arrays both, once)."""
        return self.sorted_count + sum(1 for hashed in self._recent if self._moved(hashed) is None)

    @property
    def sorted_count(self) -> int:
        """How many hashes the sorted arrays hold."""
        return sum(map(len, self._hashes))

    def get(self, hashed: int) -> int | None:
        offset = self._recent.get(hashed)
        moved = self._moved(hashed)
        if moved is None:
            return offset
        return moved if offset is None else min(moved, offset)

    def _moved(self, hashed: int) -> int | None:
        """The offset noted for ``hashed`` in the sorted arrays."""
        if not self._hashes:
            return None
        shard = hashed >> SHARD_SHIFT
        hashes = self._hashes[shard]
        place = bisect.bisect_left(hashes, hashed)
        if place < len(hashes) and hashes[place] == hashed:
            return self._offsets[shard][place]
        return None

    def add(self, hashed: int, offset: int) -> None:
        """Note ``offset`` for ``hashed`` (a later line with a hash already noted changes nothing)."""
        recent = self._recent
        recent.setdefault(hashed, offset)
        if len(recent) >= FLUSH_AT:
            self.compact()

    def items(self) -> Iterator[tuple[int, int]]:
        """Every hash noted with an offset for it (one not yet compacted may come twice)."""
        for hashes, offsets in zip(self._hashes, self._offsets, strict=True):
            yield from zip(hashes, offsets, strict=True)
        yield from self._recent.items()

    def take_later(self, later: IdempotencyKeys) -> None:
        """Add the keys of lines read after these (another process read them)."""
        recent = self._recent
        for hashed, offset in later.items():
            recent.setdefault(hashed, offset)
        self.compact()

    def compact(self) -> None:
        """Move the keys in the dict into the sorted arrays."""
        recent = self._recent
        if not recent:
            return
        if len(recent) > self.sorted_count // 4:
            self._rebuild()
            return
        all_hashes, all_offsets = self._hashes, self._offsets
        for hashed, offset in recent.items():
            shard = hashed >> SHARD_SHIFT
            hashes = all_hashes[shard]
            place = bisect.bisect_left(hashes, hashed)
            if place < len(hashes) and hashes[place] == hashed:
                offsets = all_offsets[shard]
                offsets[place] = min(offsets[place], offset)
                continue
            hashes.insert(place, hashed)
            all_offsets[shard].insert(place, offset)
        self._recent = {}

    def _rebuild(self) -> None:
        """Sort every key again: cheaper than moving them in one by one when the dict holds
        many of them (a replay, another process's keys taken in)."""
        noted: dict[int, int] = {}
        for hashes, offsets in zip(self._hashes, self._offsets, strict=True):
            noted.update(zip(hashes, offsets, strict=True))
        for hashed, offset in self._recent.items():
            known = noted.get(hashed)
            if known is None or offset < known:
                noted[hashed] = offset
        hashes = array("Q", sorted(noted))  # sorting bare ints, not pairs: fast
        offsets = array("Q", map(noted.__getitem__, hashes))
        bounds = [bisect.bisect_left(hashes, shard << SHARD_SHIFT) for shard in range(SHARDS)]
        bounds.append(len(hashes))
        self._hashes = [hashes[low:high] for low, high in itertools.pairwise(bounds)]
        self._offsets = [offsets[low:high] for low, high in itertools.pairwise(bounds)]
        self._recent = {}

    def __getstate__(self) -> tuple[dict[int, int], list[array], list[array]]:
        return self._recent, self._hashes, self._offsets

    def __setstate__(self, state: tuple[dict[int, int], list[array], list[array]]) -> None:
        self._recent, self._hashes, self._offsets = state
