"""Blocked long-polls (WSGI, or Django's ASGI handler unwrapped): one watcher thread per
process looks at the pool for all of them and wakes only those a new line concerns."""

from __future__ import annotations

import threading
import time

from taskpool.realtime import longpoll
from taskpool.realtime.blocking import thread_hub_for
from taskpool.realtime.longpoll import wait_for_pending_in_thread
from taskpool.stores.jsonl import JsonlStore


def watchers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "taskpool-watcher"]


def test_blocked_long_polls_share_one_watcher_and_wake_only_for_their_device(
    store, pool_dir, monkeypatch
):
    # Only a wake-up from the watcher can answer within the joins' 10 s.
    monkeypatch.setattr(longpoll, "RECHECK_SECONDS", 60)
    answers: dict[str, list[dict]] = {}
    earlier_watchers = set(watchers())  # other tests' stores' watchers linger a few seconds

    def poll(device_id: str) -> None:
        answers[device_id] = wait_for_pending_in_thread(store, device_id, limit=10, seconds=30)

    threads = {f"d{n}": threading.Thread(target=poll, args=(f"d{n}",)) for n in range(12)}
    for thread in threads.values():
        thread.start()
    hub = thread_hub_for(store)
    deadline = time.monotonic() + 10
    while sum(len(group) for group in hub._waiters.values()) < 12:
        assert time.monotonic() < deadline, "the polls never waited"
        time.sleep(0.01)
    assert len(set(watchers()) - earlier_watchers) == 1

    other = JsonlStore(pool_dir, fsync=False)  # another process's writer, as far as files go
    for_two = other.post_task(sender="user:ops", to="device:[d3,d7]", title="two").message
    for device_id in ("d3", "d7"):
        threads[device_id].join(timeout=10)
        assert answers[device_id] == [for_two]
    time.sleep(0.3)  # several watcher rounds: the others would have been woken by now
    assert not any(device in answers for device in threads if device not in ("d3", "d7"))
    assert all(threads[device].is_alive() for device in threads if device not in ("d3", "d7"))

    for_all = other.post_task(sender="user:ops", to="device:*", title="all").message
    for device_id, thread in threads.items():
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert answers[device_id] == ([for_two] if device_id in ("d3", "d7") else [for_all])
    other.close()


def test_a_blocked_long_poll_with_nothing_for_it_answers_empty_at_its_deadline(store):
    started = time.monotonic()
    assert wait_for_pending_in_thread(store, "quiet", limit=10, seconds=0.3) == []
    assert time.monotonic() - started >= 0.3
