"""The index's compact structures: the task registry and the expiry heap."""

import tracemalloc
from collections.abc import Callable
from typing import TypeVar

import pytest

from taskpool.lifecycle import CANCELLED, EXPIRED, FINISHED
from taskpool.messages import format_timestamp
from taskpool.stores.jsonl.index import DayRecords, PoolIndex

NOW = 1_780_000_000.0
T = TypeVar("T")


def traced_growth(build: Callable[[], T]) -> tuple[T, int]:
    """What ``build`` returns, and how many bytes more Python holds once it has."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = build()
        return built, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_registry_keeps_each_id_apart_and_returns_what_was_noted():
    records = DayRecords()
    ids = [
        "msg_" + "ab" * 16,
        "msg_" + "AB" * 16,  # upper-case hex is another id, not the same bytes
        "msg_" + "ab " * 10 + "ab",  # what bytes.fromhex would accept, but not an id of ours
        "hand-written-id",
        "msg_" + "0" * 32,
    ]
    for number, task_id in enumerate(ids):
        records.note_task(
            task_id, number * 1000, (None, FINISHED, CANCELLED, EXPIRED, None)[number], number
        )
    for number, task_id in enumerate(ids):
        assert records.task(task_id) == (
            number * 1000,
            (None, FINISHED, CANCELLED, EXPIRED, None)[number],
            number,
        )
    assert records.task("msg_" + "cd" * 16) is None
    assert [entry[0] for entry in records.tasks_newest_first()] == ids[::-1]


def test_registry_packs_large_offsets_and_every_status_bit():
    records = DayRecords()
    records.note_task("msg_" + "1" * 32, (1 << 40) - 1, EXPIRED, 0xFF)
    assert records.task("msg_" + "1" * 32) == ((1 << 40) - 1, EXPIRED, 0xFF)
    records.note_task("msg_" + "1" * 32, 7, None, 0)  # reopened: replaced, not merged
    assert records.task("msg_" + "1" * 32) == (7, None, 0)


def task(number: int, expires: float) -> dict:
    return {
        "id": f"msg_{number:032x}",
        "ts": format_timestamp(NOW),
        "from": "backend",
        "to": f"device:d{number}",
        "type": "task",
        "title": "",
        "body": "",
        "parent_id": None,
        "meta": {"expires_at": format_timestamp(expires)},
    }


def done(number: int) -> dict:
    return {
        "id": f"msg_{number + 10**6:032x}",
        "ts": format_timestamp(NOW),
        "from": f"device:d{number}",
        "to": "backend",
        "type": "response",
        "title": "",
        "body": "",
        "parent_id": f"msg_{number:032x}",
        "meta": {"status": "done"},
    }


def test_expiry_heap_is_compacted_and_still_expires_the_open_tasks():
    index = PoolIndex(7 * 86400)
    day = 739_000
    offset = 0
    index.add(task(0, NOW + 60), day, offset, NOW)  # stays open, expires in a minute
    for number in range(1, 5000):
        offset += 100
        index.add(task(number, NOW + 3600), day, offset, NOW)
        offset += 100
        index.add(done(number), day, offset, NOW)
    assert list(index.open) == [f"msg_{0:032x}"]
    assert len(index._expiries) <= 2 * len(index.open) + 1025
    index.expire(NOW + 59)
    assert index.pending_for("d0", NOW + 59, 10)[0]["id"] == f"msg_{0:032x}"
    index.expire(NOW + 61)
    assert index.open == {}
    assert index.locate(f"msg_{0:032x}").closed == EXPIRED
    assert index.locate(f"msg_{4999:032x}").closed == FINISHED


def test_idempotency_keys_give_the_first_offset_of_each_hash_as_a_dict_would():
    """Keys move from their dict into the sorted arrays as they come; every lookup, across
    moves, a late line to a compacted day, merges and a pickle, answers as a plain dict."""
    import pickle
    import random

    from taskpool.stores.jsonl import idempotency
    from taskpool.stores.jsonl.idempotency import IdempotencyKeys

    draw = random.Random(12)
    keys, expected = IdempotencyKeys(), {}
    # Hashes from a small pool, so many repeat (the first line counts), some in every shard.
    pool = [draw.getrandbits(64) for _ in range(6 * idempotency.FLUSH_AT)]
    pool += [0, 2**64 - 1, 1 << idempotency.SHARD_SHIFT]
    for offset in range(0, 100 * idempotency.FLUSH_AT, 5):
        hashed = draw.choice(pool)
        keys.add(hashed, offset)
        expected.setdefault(hashed, offset)
        if offset % 9 == 0:
            probe = draw.choice(pool)
            assert keys.get(probe) == expected.get(probe)
    assert len(keys._recent) < idempotency.FLUSH_AT  # they moved, at last one by one:
    assert keys.sorted_count > 4 * idempotency.FLUSH_AT  # a batch was under a quarter of them
    keys.compact()
    keys.add(pool[0], 1)  # a line come late, before the first one noted: it counts now
    expected[pool[0]] = 1
    later = IdempotencyKeys()
    for hashed in [*pool[:100], 12345]:
        later.add(hashed, 10**9)  # read by another process after these: the first counts
        expected.setdefault(hashed, 10**9)
    keys.take_later(later)
    copy = pickle.loads(pickle.dumps(keys))
    for each in (keys, copy):
        assert len(each) == len(expected)
        assert all(each.get(hashed) == offset for hashed, offset in expected.items())
        assert each.get(draw.getrandbits(64)) is None


def test_a_days_idempotency_keys_take_16_bytes_each_while_it_is_written():
    """The day being written keeps its keys as compactly as an older day, not in a dict."""
    from taskpool.stores.jsonl.idempotency import IdempotencyKeys, key_hash

    hashes = [key_hash("device:pi-1", f"task-{number}.done") for number in range(100_000)]

    def build() -> IdempotencyKeys:
        keys = IdempotencyKeys()
        for offset, hashed in enumerate(hashes):
            keys.add(hashed, offset * 300)
        return keys

    keys, grown = traced_growth(build)
    assert len(keys) == 100_000
    # 16 bytes a key, the arrays' spare room, and at most one batch still in the dict;
    # a dict of them all took about 120 bytes a key.
    assert grown / 100_000 < 30, grown / 100_000


@pytest.mark.parametrize(
    ("steps", "compact_every", "shards"),
    [
        (6000, 1500, 1),  # few tasks: the arrays sorted again at each compaction, one shard
        (40_000, 700, 256),  # a day being written: tasks moved in one by one, then 256 shards
    ],
)
def test_a_task_registry_answers_as_a_dict_in_file_order_across_compactions(
    steps: int, compact_every: int, shards: int
):
    """Tasks move from their dict into the arrays when compacted; every lookup, the order
    both ways, a record changed where it is, late tasks, merges and a pickle, as a dict."""
    import pickle
    import random

    from taskpool.stores.jsonl.task_registry import TaskRegistry

    draw = random.Random(7)
    registry, expected = TaskRegistry(), {}  # key -> packed; packed grows with the offset
    noted: list[str | bytes] = []  # the keys of ``expected``, to draw from
    # Ids sharing their high half (one 64-bit half alike) and ids kept by name, among random ones.
    twins = [bytes(8) + draw.randbytes(8) for _ in range(3)]
    offset = 0

    def new_key() -> str | bytes:
        roll = draw.random()
        if roll < 0.05:
            return f"hand-written-{offset}"
        if roll < 0.08 and twins:
            return twins.pop()
        return draw.randbytes(16)

    for step in range(steps):
        offset += draw.randrange(1, 500)
        roll = draw.random()
        if roll < 0.6 or not expected:
            key, packed = new_key(), offset << 10
            noted.append(key)
        else:  # a record noted again (a task closing): its place stays
            key = draw.choice(noted)
            packed = (expected[key] >> 10 << 10) | draw.randrange(1024)
        registry.note(key, packed)
        expected[key] = packed
        if step % compact_every == compact_every - 1:
            registry.compact()
        if step % 7 == 0:
            probe = draw.choice(
                [draw.randbytes(16), draw.choice(noted), *noted[-3:], twins[0] if twins else b""]
            )
            assert registry.get(probe) == expected.get(probe)
            assert (probe in registry) == (probe in expected)
    later = TaskRegistry()
    for number in range(50):
        key = draw.randbytes(16) if number % 10 else f"later-{number}"
        offset += 100
        later.note(key, offset << 10)
        expected[key] = offset << 10
    later.compact()
    registry.take_later(later)
    in_order = sorted(expected.items(), key=lambda item: item[1])

    def id_of(key: str | bytes) -> str:
        return "msg_" + key.hex() if isinstance(key, bytes) else key

    for each in (registry, pickle.loads(pickle.dumps(registry))):
        assert len(each) == len(expected)
        assert all(each.get(key) == packed for key, packed in expected.items())
        assert list(each.in_file_order()) == in_order
        assert list(each.newest_first()) == [(id_of(key), packed) for key, packed in in_order[::-1]]
        assert each.get(draw.randbytes(16)) is None and "unknown" not in each
    registry.compact()
    assert registry._recent == {} and len(registry._sorted) == shards
    assert list(registry.newest_first()) == [(id_of(key), packed) for key, packed in in_order[::-1]]


def test_a_finished_days_tasks_take_under_40_bytes_each():
    """Once compacted, a day's tasks take their arrays' room, not a dict's 120 bytes a task."""
    import os

    from taskpool.stores.jsonl.task_registry import TaskRegistry

    keys = [os.urandom(16) for _ in range(100_000)]

    def build() -> TaskRegistry:
        registry = TaskRegistry()
        for number, key in enumerate(keys):
            registry.note(key, (number * 300) << 10 | 3)
        registry.compact()
        return registry

    registry, grown = traced_growth(build)
    assert len(registry) == 100_000
    assert grown / 100_000 < 40, grown / 100_000


def test_the_day_being_written_takes_under_45_bytes_a_task_as_it_grows():
    """Its tasks move into the arrays every few thousand, not once the day is over."""
    import os

    from taskpool.stores.jsonl.task_registry import FLUSH_AT, TaskRegistry

    keys = [os.urandom(16) for _ in range(100_000)]

    def build() -> TaskRegistry:
        registry = TaskRegistry()
        for number, key in enumerate(keys):
            registry.note(key, (number * 300) << 10 | 3)
            if registry.compact_due(day_over=False):
                registry.compact()
        return registry

    registry, grown = traced_growth(build)
    assert len(registry._recent) < FLUSH_AT
    assert all(registry.get(key) == (number * 300) << 10 | 3 for number, key in enumerate(keys))
    assert grown / 100_000 < 45, grown / 100_000


def test_the_index_moves_the_newest_days_tasks_once_it_has_enough_of_them():
    from taskpool.stores.jsonl.task_registry import FLUSH_AT

    index = PoolIndex(7 * 86400)
    for number in range(FLUSH_AT - 1):
        index.add(task(number, NOW + 3600), 739_000, number * 100, NOW)
    index.compact_tasks()
    assert len(index.days[739_000].tasks._recent) == FLUSH_AT - 1  # too few yet
    index.add(task(FLUSH_AT, NOW + 3600), 739_000, FLUSH_AT * 100, NOW)
    index.compact_tasks()
    assert index.days[739_000].tasks._recent == {}
    index.add(done(7), 739_000, FLUSH_AT * 100 + 100, NOW)
    assert index.locate(f"msg_{7:032x}").closed == FINISHED
    assert index.locate(f"msg_{FLUSH_AT:032x}").offset == FLUSH_AT * 100


def test_the_index_compacts_every_day_but_the_newest_and_still_finds_their_tasks():
    index = PoolIndex(7 * 86400)
    days = (739_000, 739_001, 739_002)
    for day in days:
        for number in range(day * 10, day * 10 + 5):
            index.add(task(number, NOW + 3600), day, number % 10 * 100, NOW)
    index.compact_tasks()
    assert [index.days[day].tasks._recent == {} for day in days] == [True, True, False]
    index.add(done(days[0] * 10), days[2], 900, NOW)  # an answer to a compacted day's task
    late = task(days[0] * 10 + 7, NOW + 3600)  # a line come late to a compacted day
    index.add(late, days[0], 2000, NOW)
    index.add(task(days[0] * 10 + 1, NOW + 3600), days[2], 1000, NOW)  # a repeated line
    assert index.locate(f"msg_{days[0] * 10:032x}").closed == FINISHED
    assert index.locate(late["id"]).offset == 2000
    assert index.locate(f"msg_{days[0] * 10 + 1:032x}").day_ordinal == days[0]
    listed = [task_id for task_id, *_rest in index.days[days[0]].tasks_newest_first()]
    assert listed == [
        late["id"],
        *(f"msg_{n:032x}" for n in range(days[0] * 10 + 4, days[0] * 10 - 1, -1)),
    ]


def test_an_answer_is_one_string_that_gives_back_its_status_and_time():
    from taskpool.executions import EXECUTION_STATUSES, answer_record, record_status, record_time

    for status in (*EXECUTION_STATUSES, "a status no code names"):
        record = answer_record(status, "2026-06-03T12:00:00Z")
        assert type(record) is str
        assert (record_status(record), record_time(record)) == (status, "2026-06-03T12:00:00Z")
    assert record_time(answer_record("pending", "")) == ""  # a database row's unanswered device


def test_an_open_broadcasts_answers_take_a_string_each_not_a_tuple_and_a_string():
    """A broadcast holds every answering device's answer until it expires."""
    import sys

    from taskpool.lifecycle import TaskState

    # Interned beforehand, as a fleet's names are once its first answers are read.
    devices = [sys.intern(f"device-{number:05d}") for number in range(10_000)]
    broadcast = task(1, NOW + 3600) | {"to": "device:*"}
    state = TaskState(broadcast, 0, 7 * 86400)

    def answer_all() -> TaskState:
        # Each answer read as a line is: a message made, applied, and let go.
        for number, device in enumerate(devices):
            state.apply(
                done(1) | {"from": f"device:{device}", "ts": format_timestamp(NOW + number)}
            )
        return state

    _, grown = traced_growth(answer_all)
    assert len(state.answers) == 10_000
    # The dict's slot and one 21-character string, about 91 bytes; a (status, ts) tuple
    # and the time string it kept took 144.
    assert grown / 10_000 < 115, grown / 10_000
