"""What only the database store has to get right: rows that commit out of order, a new
process that serves at once, its own refusals. (The contract every store keeps is in
``tests/contract``.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
from collections.abc import Callable
from functools import partial

import orjson
import psycopg
import pytest
from django.core import checks
from django.db import connections
from django.test import override_settings

from taskpool.exceptions import PoolError, StoreUnavailable
from taskpool.lifecycle import replay
from taskpool.messages import encode_line, new_message
from taskpool.realtime.scope import ADMIN, Scope
from taskpool.realtime.stream import events
from taskpool.stores.database.horizon import horizon, register_writer
from taskpool.stores.database.ledger import give_broadcasts
from taskpool.stores.database.log import parse_position
from taskpool.stores.database.store import DatabaseStore
from tests.contract.support import Clock, stored

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not os.environ.get("TASKPOOL_TEST_POSTGRES"), reason="TASKPOOL_TEST_POSTGRES is not set"
    ),
    pytest.mark.django_db(transaction=True, databases=["default", "pool"]),
]


@pytest.fixture
def store():
    store = DatabaseStore("pool")
    yield store
    store.close()


def connect() -> psycopg.Connection:
    params = connections["pool"].get_connection_params()
    return psycopg.connect(
        **{k: v for k, v in params.items() if isinstance(v, (str, int)) and v != ""}
    )


def a_slow_writer(message: dict) -> psycopg.Connection:
    """A writer whose transaction has stored a message and has not committed yet."""
    connection = connect()
    register_writer(connection.cursor())
    connection.execute(
        "INSERT INTO taskpool_db_message (message_id, day, ts, kind, sender, recipient, "
        "parent_id, line) VALUES (%s, %s, %s, %s, %s, %s, NULL, %s)",
        [
            message["id"],
            message["ts"][:10],
            message["ts"],
            message["type"],
            message["from"],
            message["to"],
            encode_line(message)[:-1].decode(),
        ],
    )
    return connection


def heartbeat(store: DatabaseStore, device: str) -> dict:
    message = new_message(
        store.now(),
        sender=f"device:{device}",
        to="backend",
        kind="heartbeat",
        title="",
        body="",
        parent_id=None,
        meta={},
    )
    return message


def test_a_tailing_reader_gets_a_row_that_commits_after_a_later_one(store):
    start = store.end_cursor()
    slow = a_slow_writer(heartbeat(store, "slow"))  # takes its row number first...
    try:
        fast = store.post_heartbeat(device_id="fast")  # ...and this one commits first
        page = store.messages_after(start, limit=10)
        # The reader does not go past the slow writer's place while it may still commit.
        assert page.results == [] and page.next_cursor == start
        slow.commit()
    finally:
        slow.close()
    page = store.messages_after(start, limit=10)
    assert [m["from"] for m in page.results] == ["device:slow", "device:fast"]
    assert page.results[1] == fast
    assert store.messages_after(page.next_cursor, limit=10).results == []


def test_a_reader_waits_for_a_writer_whose_id_pg_locks_does_not_show_yet(store):
    # A transaction takes the lock on its own id a moment after it gets the id, and a
    # reader may look at pg_locks in between (a writer held up there by a busy machine
    # or by other sessions reading pg_locks). The moment is made to last: this session's
    # pg_locks leaves the slow writer's id out.
    start = store.end_cursor()
    slow = a_slow_writer(heartbeat(store, "slow"))
    try:
        with connections["pool"].cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY VIEW pg_locks AS SELECT * FROM pg_catalog.pg_locks "
                f"WHERE NOT (locktype = 'transactionid' AND pid = {int(slow.info.backend_pid)})"
            )
        try:
            fast = store.post_heartbeat(device_id="fast")
            page = store.messages_after(start, limit=10)
            # Not past the slow writer's row, which commits next.
            assert page.results == [] and page.next_cursor == start
            assert store.end_cursor() == start
        finally:
            with connections["pool"].cursor() as cursor:
                cursor.execute("DROP VIEW pg_temp.pg_locks")
        slow.commit()
    finally:
        slow.close()
    page = store.messages_after(start, limit=10)
    assert [m["from"] for m in page.results] == ["device:slow", "device:fast"]
    assert page.results[1] == fast


def test_writers_that_got_their_ids_after_a_readers_snapshot_do_not_hide_the_log(store):
    # Ids handed out after the last transaction that ended are past a snapshot's end
    # (under load, two writers in flight are enough). Made lasting here: the reader's
    # snapshot is taken before the writers get theirs.
    beat = store.post_heartbeat(device_id="before")
    start = store.end_cursor()
    reader = connect()
    writers = []
    try:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT 1")  # the snapshot
        writers = [a_slow_writer(heartbeat(store, name)) for name in ("one", "two")]
        with reader.cursor() as cursor:
            seen = horizon(cursor)
        # Below every row stored before: a reader saw an empty log, and paged to its end.
        assert seen > parse_position(start)[0]
        with reader.cursor() as cursor:
            cursor.execute(
                "SELECT line FROM taskpool_db_message WHERE xid < %s ORDER BY xid DESC, seq DESC",
                [seen],
            )
            assert orjson.loads(cursor.fetchone()[0]) == beat
    finally:
        reader.close()
        for writer in writers:
            writer.rollback()
            writer.close()


def test_a_long_transaction_that_does_not_write_the_log_holds_no_reader_back(store):
    elsewhere = connect()  # say, another application's transaction on the same server
    try:
        elsewhere.execute("SELECT pg_current_xact_id()")  # it has an id, and keeps it
        start = store.end_cursor()
        beat = store.post_heartbeat(device_id="later")
        assert store.messages_after(start, limit=10).results == [beat]
    finally:
        elsewhere.rollback()
        elsewhere.close()


def a_host_stops_while_it_writes(
    store: DatabaseStore, stuck: threading.Event, write: Callable[[], object]
) -> object:
    """Run ``write`` in a thread of its own, which sets ``stuck`` where its host stops (for
    4 s), and check that meanwhile a reader sees a heartbeat stored after it within 3 s.
    Returns what the stuck write returned, or the ``StoreUnavailable`` it raised."""
    store.writer_idle_seconds = 0.5
    start = store.end_cursor()
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(write())
        except StoreUnavailable as error:
            outcome.append(error)
        finally:
            connections.close_all()

    writer = threading.Thread(target=run)
    writer.start()
    assert stuck.wait(10)
    beat = store.post_heartbeat(device_id="elsewhere")
    seen, waited = [], time.monotonic()
    while not seen and time.monotonic() - waited < 3.0:
        seen = store.messages_after(start, limit=10).results
        time.sleep(0.05)
    assert seen == [beat]  # within 3 s: the stuck writer would still hold it back for 4
    writer.join()
    (ended,) = outcome
    return ended


def test_a_writer_whose_host_stops_mid_transaction_holds_readers_back_only_so_long(store):
    """A host frozen, or cut off, in the middle of a write: PostgreSQL ends the transaction
    once it has waited on its client for the writer's idle bound, and every reader sees
    what the other writers stored meanwhile, long before the stuck one would come back."""
    stuck = threading.Event()

    def stops_midway(ledger, now):
        with connections["pool"].cursor() as cursor:
            cursor.execute("SELECT pg_current_xact_id()")  # as a row it wrote or locked
        stuck.set()
        time.sleep(4.0)  # the host stops: its transaction open, its client silent
        return None, "decided"

    ended = a_host_stops_while_it_writes(store, stuck, lambda: store.transact(stops_midway))
    assert isinstance(ended, StoreUnavailable)


@pytest.mark.parametrize(
    "after",
    [
        "INSERT INTO taskpool_db_execution",  # a task's rows for its devices
        "INSERT INTO taskpool_db_task",
    ],
)
def test_a_host_that_stops_after_any_statement_of_a_post_holds_readers_back_only_so_long(
    store, after
):
    """Wherever in a post the host stops, PostgreSQL ends the transaction once it waited:
    each change is one statement, since a pipelined batch (``executemany``) would leave
    the idle bound unarmed."""
    stuck = threading.Event()

    def stop_after(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith(after) and not stuck.is_set():
            stuck.set()
            time.sleep(4.0)  # the host stops here
        return result

    def post() -> object:
        with connections["pool"].execute_wrapper(stop_after):
            return store.post_task(sender="user:ops", to="device:[a,b]", title="t")

    assert isinstance(a_host_stops_while_it_writes(store, stuck, post), StoreUnavailable)
    assert [m["type"] for m in stored(store)] == ["heartbeat"]  # the post left nothing


def test_a_tailing_stream_delivers_both_once_each(store):
    async def scenario() -> list[str]:
        start = await asyncio.to_thread(store.end_cursor)
        stream = events(store, Scope(ADMIN), start, keep_alive=60)
        assert await anext(stream) == b": stream open\n\n"
        slow = await asyncio.to_thread(a_slow_writer, heartbeat(store, "slow"))
        await asyncio.to_thread(store.post_heartbeat, device_id="fast")
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(1.0)  # the stream looked meanwhile and sent nothing
        assert not pending.done()
        await asyncio.to_thread(slow.commit)
        await asyncio.to_thread(store.post_heartbeat, device_id="third")  # a hint, as any write
        chunks = [await asyncio.wait_for(pending, 20)]
        senders = _senders(chunks)
        while len(senders) < 3:
            chunks.append(await asyncio.wait_for(anext(stream), 20))
            senders = _senders(chunks)
        await stream.aclose()
        slow.close()
        return senders

    assert asyncio.run(scenario()) == ["device:slow", "device:fast", "device:third"]


def _senders(chunks: list[bytes]) -> list[str]:
    return [
        orjson.loads(line[6:])["from"]
        for chunk in chunks
        for line in chunk.split(b"\n")
        if line.startswith(b"data: ")
    ]


def test_a_new_process_serves_at_once_without_reading_the_history(store):
    for number in range(50):
        store.post_task(sender="user:ops", to="device:a", title=str(number))
    fresh = DatabaseStore("pool")
    try:
        assert len(fresh.pending_for("a", limit=1000)) == 50
    finally:
        fresh.close()


def test_two_processes_answering_one_broadcast_at_once_store_both(store):
    task = store.post_task(sender="user:ops", to="device:*", title="all").message
    others = [DatabaseStore("pool") for _ in range(6)]
    barrier = threading.Barrier(len(others))
    errors: list[BaseException] = []

    def answer(other: DatabaseStore, device: str) -> None:
        try:
            barrier.wait()
            other.post_response(device_id=device, parent_id=task["id"], status="done")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            other.close()

    threads = [
        threading.Thread(target=answer, args=(other, f"d{n}")) for n, other in enumerate(others)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    answers = [m for m in stored(store) if m["type"] == "response"]
    assert sorted(m["from"] for m in answers) == [f"device:d{n}" for n in range(6)]
    assert all(store.pending_for(f"d{n}") == [] for n in range(6))


def test_counts_leave_out_tasks_expired_since_the_last_sweep():
    clock = Clock()
    store = DatabaseStore("pool", clock=clock)
    try:
        store.expiry_sweep_seconds = float("inf")  # no sweep closes them: the reads must
        store.post_task(sender="user:ops", to="device:[a,b]", title="short", ttl=60)
        store.post_task(sender="user:ops", to="device:*", title="short too", ttl=60)
        kept = store.post_task(sender="user:ops", to="device:a", title="kept").message
        assert store.pending_counts(["a", "b"]) == {"a": 3, "b": 2}
        clock.advance(61)
        assert [t["id"] for t in store.pending_for("a")] == [kept["id"]]
        assert store.pending_counts(["a", "b"]) == {"a": 1, "b": 0}
    finally:
        store.close()


def test_counts_read_one_snapshot_while_another_host_posts(store):
    """The counts take three statements; a task another host posts between them is counted
    by all three or by none (a job that starts later was taken off a count it was not in)."""
    from datetime import UTC, datetime

    counted: list[str] = []

    def another_host_posts_after_the_first(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith("SELECT d.device_id"):  # each device's counted rows
            counted.append(sql)
            start = datetime.fromtimestamp(store.now() + 3600, UTC)
            thread = threading.Thread(
                target=lambda: store.post_task(
                    sender="user:ops", to="device:a", title="later", not_before=start
                )
            )
            thread.start()
            thread.join()
        return result

    with connections["pool"].execute_wrapper(another_host_posts_after_the_first):
        counts = store.pending_counts(["a"])
    assert counted
    assert counts == {"a": 0}
    assert store.pending_counts(["a"]) == {"a": 0}


def test_counts_kept_by_triggers_equal_the_rows_before_and_after_each_fold(store):
    devices = ["a", "b", "c", "d"]

    def agree() -> dict[str, int]:
        counts = store.pending_counts(devices)
        assert counts == {d: len(store.pending_for(d, limit=1000)) for d in devices}
        return counts

    listed = store.post_task(sender="user:ops", to="device:[a,b,c]", title="list").message
    everyone = store.post_task(sender="user:ops", to="device:*", title="all").message
    anyone = store.post_task(sender="user:ops", to="device:*", title="one", mode="any").message
    assert agree() == {"a": 3, "b": 3, "c": 3, "d": 2}
    assert store.fold_pending_changes() > 0
    assert agree() == {"a": 3, "b": 3, "c": 3, "d": 2}
    store.post_response(device_id="a", parent_id=listed["id"], status="done")
    store.post_response(device_id="b", parent_id=everyone["id"], status="failed")
    store.claim(device_id="c", parent_id=anyone["id"])
    assert agree() == {"a": 1, "b": 1, "c": 3, "d": 1}
    store.fold_pending_changes()
    store.cancel(sender="user:ops", task_id=everyone["id"])
    assert agree() == {"a": 0, "b": 1, "c": 2, "d": 0}
    store.fold_pending_changes()
    assert agree() == {"a": 0, "b": 1, "c": 2, "d": 0}
    with connections["pool"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM taskpool_db_pending_change")
        assert cursor.fetchone() == (0,)
        cursor.execute(
            "SELECT device_id, pending_rows FROM taskpool_db_device WHERE device_id = ANY(%s)",
            [devices],
        )
        kept = dict(cursor.fetchall())
        cursor.execute(
            "SELECT device_id, count(*) FROM taskpool_db_execution WHERE active "
            "AND device_id = ANY(%s) GROUP BY device_id",
            [devices],
        )
        assert {d: n for d, n in kept.items() if n} == dict(cursor.fetchall())


def test_a_heartbeat_is_one_statement_that_registers_its_writer_first(store):
    seen: list[str] = []

    def keep(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connections["pool"].execute_wrapper(keep):
        beat = store.post_heartbeat(device_id="a", meta={"load": [0.1]})
    (statement,) = seen
    assert statement.index("pg_advisory_xact_lock_shared") < statement.index("INSERT")
    assert stored(store)[-1] == beat
    assert store.device_activity(["a"])["a"].last_heartbeat == beat["ts"]


def test_a_parent_id_with_a_nul_character_names_no_task(store):
    from taskpool.exceptions import UnknownTask

    with pytest.raises(UnknownTask):
        store.post_response(device_id="a", parent_id="msg_\x00", status="done")
    assert store.find_task("msg_\x00") is None


def test_the_system_check_refuses_a_database_that_is_not_postgresql(settings):
    errors = DatabaseStore.check({"DATABASE": "default"})  # SQLite in the tests
    assert [error.id for error in errors] == ["taskpool.E011"]
    assert "needs PostgreSQL" in errors[0].msg
    assert [e.id for e in DatabaseStore.check({"DATABASE": "nowhere"})] == ["taskpool.E010"]
    assert DatabaseStore.check({"DATABASE": "pool"}) == []
    with override_settings(
        TASKPOOL={**settings.TASKPOOL, "STORE": "taskpool.stores.database.DatabaseStore"}
    ):
        assert [e for e in checks.run_checks() if e.id.startswith("taskpool.")] == []


def test_the_overview_inside_a_callers_transaction_keeps_nothing(store):
    """A site with ATOMIC_REQUESTS asks in its own transaction: no snapshot of its own then."""
    from django.db import transaction

    task = store.post_task(sender="user:ops", to="device:a", title="t").message
    with transaction.atomic(using="pool"):
        connections["pool"].cursor().execute("SELECT 1")  # the transaction has begun
        overview = store.overview(["a"])
    assert overview.task_days[-1].sent == 1
    assert overview.task_days[-1].statuses == {"pending": 1}
    assert overview.oldest_open["id"] == task["id"]
    assert store._kept_counts._task_days == {}


def test_the_row_count_is_counted_until_the_table_is_first_analysed(store):
    """The planner's estimate is -1 before the first ANALYZE: the dashboard said 0 rows."""
    from django.db import transaction

    for device in "abc":
        store.post_heartbeat(device_id=device)
    with transaction.atomic(using="pool"):
        # As a young table is before autovacuum first analyses it (a test database's
        # table may have been analysed already: say it was not, and roll that back).
        connections["pool"].cursor().execute(
            "UPDATE pg_class SET reltuples = -1 WHERE oid = 'taskpool_db_message'::regclass"
        )
        assert store.figures().stored_rows == 3
        transaction.set_rollback(True, using="pool")
    connections["pool"].cursor().execute("ANALYZE taskpool_db_message")
    assert store.figures().stored_rows == 3


def test_a_write_inside_a_transaction_that_wrote_before_is_said_in_the_log(store, caplog):
    """Readers count on every writer registering before its transaction has an id: one that
    had an id already may have been passed. The store cannot undo that; it says so."""
    from django.db import transaction

    store.post_task(sender="user:ops", to="device:a", title="alone")
    assert not [r for r in caplog.records if "inside a transaction" in r.getMessage()]
    with transaction.atomic(using="pool"):
        connections["pool"].cursor().execute("SELECT pg_current_xact_id()")  # an id, as a write
        store.post_task(sender="user:ops", to="device:a", title="inside the site's")
    said = [r for r in caplog.records if "inside a transaction" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    assert [m["title"] for m in store.pending_for("a")] == ["alone", "inside the site's"]


def test_a_status_column_is_written_for_responses_and_filled_in_for_older_rows(store):
    import importlib

    from django.db import migrations

    task = store.post_task(sender="user:ops", to="device:a", title="t").message
    store.post_response(device_id="a", parent_id=task["id"], status="failed")
    store.post_heartbeat(device_id="a")

    def kinds_and_statuses() -> list[tuple]:
        with connections["pool"].cursor() as cursor:
            cursor.execute("SELECT kind, status FROM taskpool_db_message ORDER BY seq")
            return cursor.fetchall()

    assert kinds_and_statuses() == [("task", None), ("response", "failed"), ("heartbeat", None)]
    # Rows stored before the column: the migration fills it in from their lines.
    with connections["pool"].cursor() as cursor:
        cursor.execute("UPDATE taskpool_db_message SET status = NULL")
        migration = importlib.import_module(
            "taskpool.stores.database.migrations.0004_dashboard"
        ).Migration
        (fill,) = [op for op in migration.operations if isinstance(op, migrations.RunSQL)]
        cursor.execute(fill.sql)
    assert kinds_and_statuses() == [("task", None), ("response", "failed"), ("heartbeat", None)]


def test_the_stores_own_connections_prepare_no_statements_as_djangos_do(store):
    """Behind PgBouncer in transaction mode, a statement prepared on one server connection
    is missing (or there already) on the next: the notifier's NOTIFY failed every sixth."""
    connection = psycopg.connect(**store._connection_params(), autocommit=True)
    try:
        assert connections["pool"].get_connection_params()["prepare_threshold"] is None
        assert connection.prepare_threshold is None
    finally:
        connection.close()


def while_a_device_is_given_its_broadcasts(device: str, write: Callable[[], object]) -> None:
    """Run ``write`` in a thread while another host gives ``device`` its broadcast rows, in a
    transaction that commits only after ``write`` had time to store (or to wait for it)."""
    giving = connect()
    give_broadcasts(giving.cursor(), device)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            write()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections.close_all()

    writer = threading.Thread(target=run)
    writer.start()
    writer.join(timeout=0.5)
    giving.commit()
    giving.close()
    writer.join(timeout=30)
    assert not writer.is_alive()
    assert errors == []


@pytest.mark.parametrize("change", ["claim", "cancel"])
def test_a_broadcast_claimed_or_cancelled_while_a_device_is_given_it_is_not_pending_for_it(
    store, change
):
    task = store.post_task(sender="user:ops", to="device:*", title="all", mode="any").message
    if change == "claim":
        write = partial(store.claim, device_id="a", parent_id=task["id"])
    else:
        write = partial(store.cancel, sender="user:ops", task_id=task["id"])
    while_a_device_is_given_its_broadcasts("b", write)
    assert store.pending_for("b") == []
    assert store.pending_counts(["b"]) == {"b": 0}


def test_a_broadcast_that_expires_while_a_device_is_given_it_is_not_counted_for_it():
    clock = Clock()
    store = DatabaseStore("pool", clock=clock)
    try:
        store.post_task(sender="user:ops", to="device:*", title="short", ttl=60)
        clock.advance(61)
        while_a_device_is_given_its_broadcasts("b", store.close_expired)
        assert store.pending_for("b") == []
        assert store.pending_counts(["b"]) == {"b": 0}
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_hosts_posting_claiming_and_polling_at_once_leave_counts_equal_to_the_lists(seed):
    """Eight hosts at once: broadcasts (any-one or not, some short-lived), claims of the
    oldest, answers, cancels, polls and counts. Afterwards, with the clock stopped, each
    device's list equals a rescan of the log, and its count the list's length."""
    devices = [f"d{number}" for number in range(8)]
    errors: list[BaseException] = []

    def host(number: int) -> None:
        rng = random.Random(seed * 100 + number)
        store = DatabaseStore("pool")
        me = devices[number]
        try:
            for _ in range(60):
                roll = rng.random()
                with contextlib.suppress(PoolError):
                    if roll < 0.2:
                        mode = rng.choice(["any", None])
                        ttl = rng.uniform(0.5, 30)
                        store.post_task(
                            sender="user:ops", to="device:*", title="t", mode=mode, ttl=ttl
                        )
                    elif roll < 0.4:
                        store.claim(device_id=me)
                    elif roll < 0.6:
                        if pending := store.pending_for(me):
                            task_id = rng.choice(pending)["id"]
                            status = rng.choice(["progress", "done"])
                            store.post_response(device_id=me, parent_id=task_id, status=status)
                    elif roll < 0.7:
                        if pending := store.pending_for(rng.choice(devices)):
                            store.cancel(sender="user:ops", task_id=rng.choice(pending)["id"])
                    else:
                        store.pending_for(rng.choice(devices))
                        store.pending_counts(devices)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            store.close()
            connections.close_all()

    hosts = [threading.Thread(target=host, args=(number,)) for number in range(len(devices))]
    for thread in hosts:
        thread.start()
    for thread in hosts:
        thread.join(timeout=120)
    assert errors == []
    stopped = time.time()
    store = DatabaseStore("pool", clock=lambda: stopped)
    try:
        store.close_expired()
        counts = store.pending_counts(devices)
        expected = {device: [] for device in devices}
        messages = [m for day in store.days() for m in store.day_messages(day)]
        tasks = [m for m in messages if m["type"] == "task"]
        for task in tasks:
            answers = [m for m in messages if m["parent_id"] == task["id"]]
            state = replay(task, answers, store.task_ttl)
            for device in devices:
                if state.is_pending_for(device, stopped):
                    expected[device].append(task["id"])
        lists = {d: [t["id"] for t in store.pending_for(d, limit=10_000)] for d in devices}
        assert lists == expected
        assert counts == {device: len(expected[device]) for device in devices}
    finally:
        store.close()
