"""The index's compact structures: the task registry and the expiry heap."""

from taskpool.lifecycle import CANCELLED, EXPIRED, FINISHED
from taskpool.messages import format_timestamp
from taskpool.stores.jsonl.index import DayRecords, PoolIndex

NOW = 1_780_000_000.0


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
