"""A pool on PostgreSQL whose connections are cut (a restart, a failover) or whose
database is down: a read or a write that meets a cut connection connects again, the
threads of the waiting endpoints' too; a request that meets no database is the API's 503
with ``Retry-After``; an open stream waits the outage out and loses nothing."""

from __future__ import annotations

import asyncio
import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, OperationalError, connections, transaction
from psycopg import sql

from taskpool.missing_tables import migrate_hint
from taskpool.realtime import sse
from taskpool.realtime.scope import ADMIN, Scope
from taskpool.realtime.stream import events, sync_events
from taskpool.stores import get_store
from tests.contract.support import stored

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not os.environ.get("TASKPOOL_TEST_POSTGRES"), reason="TASKPOOL_TEST_POSTGRES is not set"
    ),
    pytest.mark.django_db(transaction=True, databases=["default", "pool"]),
    pytest.mark.parametrize("store_kind", ["database"], indirect=True),
]


@pytest.fixture(autouse=True)
def fresh_connection_after():
    """This thread's connection was cut too: a fresh one, for the test's own clean-up."""
    yield
    connections["pool"].close()


def admin_connection() -> psycopg.Connection:
    """A connection of the test's own to the server's ``postgres`` database."""
    params = connections["pool"].get_connection_params()
    options = {k: v for k, v in params.items() if isinstance(v, (str, int)) and v != ""}
    return psycopg.connect(**{**options, "dbname": "postgres"}, autocommit=True)


def cut_the_pools_connections() -> int:
    """Terminate every session on the pool's database; how many."""
    with admin_connection() as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            [connections["pool"].settings_dict["NAME"]],
        ).fetchall()
    return len(rows)


@contextmanager
def the_database_down():
    """The pool's database refuses every connection, and the ones it had are cut."""
    name = connections["pool"].settings_dict["NAME"]

    def allow_connections(allowed: bool) -> None:
        with admin_connection() as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                    sql.Identifier(name), sql.SQL("true" if allowed else "false")
                )
            )

    allow_connections(False)
    try:
        cut_the_pools_connections()
        yield
    finally:
        allow_connections(True)


def test_a_request_meets_a_cut_connection_unharmed_and_a_database_down_as_a_503(
    pool_dir, device_client
):
    assert device_client.get("/pool/pending").status_code == 200
    assert cut_the_pools_connections() >= 1
    assert device_client.get("/pool/pending").status_code == 200  # on a fresh connection
    with the_database_down():
        down = device_client.get("/pool/pending")
    assert down.status_code == 503, down.content
    assert down["Content-Type"] == "application/json"
    assert down["Retry-After"]
    assert "database" in down.json()["detail"]
    assert device_client.get("/pool/pending").status_code == 200


@contextmanager
def the_database_read_only():
    """The pool's database takes no writes (``default_transaction_read_only``) from its next
    sessions on; the ones it had are cut so that the next are new."""
    name = connections["pool"].settings_dict["NAME"]

    def read_only(on: bool) -> None:
        with admin_connection() as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}").format(
                    sql.Identifier(name), sql.SQL("on" if on else "off")
                )
            )
        cut_the_pools_connections()

    read_only(True)
    try:
        yield
    finally:
        read_only(False)


def test_a_write_the_database_refuses_is_a_503_whose_cause_is_in_the_log(
    pool_dir, master_client, device_client, caplog
):
    """The client is told to come back; the operator is told why (the database's words)."""
    with the_database_read_only():
        task = master_client.post("/pool/task", {"to": "device:pi-1", "title": "t"}, format="json")
        beat = device_client.post("/pool/heartbeat", {}, format="json")
    for refused in (task, beat):
        assert refused.status_code == 503, refused.content
        assert refused["Content-Type"] == "application/json" and refused["Retry-After"]
    said = [r.getMessage() for r in caplog.records if r.name == "taskpool"]
    assert sum("read-only transaction" in line for line in said) == 2, said
    assert (
        master_client.post(
            "/pool/task", {"to": "device:pi-1", "title": "t"}, format="json"
        ).status_code
        == 201
    )


def test_a_read_whose_sweep_the_read_only_database_refuses_is_answered(
    pool_dir, device_client, caplog
):
    """Reads close expired tasks as they go (a sweep, at most once a second): a database
    that takes no writes refused the sweep, and the poll that ran it was a 500."""
    store = get_store()
    with the_database_read_only():
        answers = []
        for _ in range(2):
            store._swept_at = -1e18  # the sweep is due at this read
            answers.append(device_client.get("/pool/pending"))
    assert [answer.status_code for answer in answers] == [200, 200], answers[0].content
    said = [r.getMessage() for r in caplog.records if "sweep" in r.getMessage()]
    assert len(said) == 1 and "read-only transaction" in said[0]  # once, not at every read


def test_a_scrape_while_the_database_is_down_serves_the_counters(pool_dir, settings, device_client):
    """An outage is when the error rates matter: the pool's figures are left out, not the
    whole scrape."""
    from tests.conftest import client_with

    settings.TASKPOOL = {**settings.TASKPOOL, "METRICS_TOKEN": "scrape-me-0123456789abcdef"}
    scraper = client_with("scrape-me-0123456789abcdef")
    assert device_client.get("/pool/pending").status_code == 200
    with the_database_down():
        down = scraper.get("/pool/metrics")
    assert down.status_code == 200, down.content[:300]
    text = down.content.decode()
    assert 'taskpool_requests_total{endpoint="pending"' in text
    assert "taskpool_tasks_pending" not in text
    assert "taskpool_tasks_pending" in scraper.get("/pool/metrics").content.decode()


def test_a_worker_thread_whose_connection_was_cut_reads_on_a_fresh_one(pool_dir):
    """The threads the waiting endpoints read the pool from outlive any one request: each
    read they make meets the cut once, connects again and answers."""
    store = get_store()
    task = store.post_task(sender="user:ops", to="device:pi-1", title="t").message
    with ThreadPoolExecutor(max_workers=1) as worker:  # one thread, kept
        end = worker.submit(store.end_cursor).result()
        reads = {
            "end_cursor": lambda: store.end_cursor(),
            "messages_after": lambda: store.messages_after(None, limit=10).next_cursor,
            "check_cursor": lambda: store.check_cursor(end),
            "pending_for": lambda: [m["id"] for m in store.pending_for("pi-1")],
            "find_task": lambda: store.find_task(task["id"])["id"],
            "changes_since": lambda: store.changes_since(None).through,
        }
        before = {name: worker.submit(read).result() for name, read in reads.items()}
        for name, read in reads.items():
            assert cut_the_pools_connections() >= 1
            assert worker.submit(read).result() == before[name], name
        worker.submit(connections.close_all).result()
    assert before["pending_for"] == [task["id"]] and before["find_task"] == task["id"]


def test_a_write_on_a_connection_cut_before_it_began_is_stored_once(pool_dir):
    store = get_store()
    with ThreadPoolExecutor(max_workers=1) as worker:
        worker.submit(store.end_cursor).result()
        cut_the_pools_connections()
        task = worker.submit(
            store.post_task, sender="user:ops", to="device:pi-1", title="after the cut"
        ).result()
        worker.submit(connections.close_all).result()
    assert [m["id"] for m in stored(store)] == [task.message["id"]]


def test_a_read_in_a_callers_transaction_is_not_run_again(pool_dir):
    """Inside a transaction the first read's snapshot and locks are gone with the cut one:
    the caller hears of it."""
    store = get_store()
    store.end_cursor()
    cut_the_pools_connections()
    with pytest.raises(OperationalError), transaction.atomic(using="pool"):
        store.end_cursor()


def test_a_stream_goes_on_across_an_outage_and_a_cut_and_loses_nothing(pool_dir):
    store = get_store()
    down = the_database_down()

    async def next_chunk(stream) -> bytes:
        return await asyncio.wait_for(anext(stream), 20)

    async def scenario() -> list[bytes]:
        start = await asyncio.to_thread(store.end_cursor)
        stream = events(store, Scope(ADMIN), start, keep_alive=0.5)
        assert await anext(stream) == sse.OPENED
        chunks = []
        await asyncio.to_thread(down.__enter__)
        try:
            # Its first look meets no database: it looks again each second, alive meanwhile.
            chunks += [await next_chunk(stream), await next_chunk(stream)]
        finally:
            await asyncio.to_thread(down.__exit__, None, None, None)
        await asyncio.to_thread(store.post_task, sender="user:ops", to="device:a", title="back")
        while len(chunks) < 3 or b"back" not in chunks[-1]:
            chunks.append(await next_chunk(stream))
        await asyncio.to_thread(cut_the_pools_connections)
        await asyncio.to_thread(store.post_task, sender="user:ops", to="device:a", title="cut")
        while b"cut" not in chunks[-1]:
            chunks.append(await next_chunk(stream))
        await stream.aclose()
        return chunks

    chunks = asyncio.run(scenario())
    assert chunks[:2] == [sse.KEEP_ALIVE, sse.KEEP_ALIVE]
    sent = [chunk for chunk in chunks if chunk.startswith(b"id:")]
    assert len(sent) == 2
    assert b'"title":"back"' in sent[0] and b'"title":"cut"' in sent[1]


def test_a_stream_served_without_an_event_loop_goes_on_across_an_outage(pool_dir):
    store = get_store()
    stream = sync_events(store, Scope(ADMIN), store.end_cursor(), keep_alive=0.5)
    assert next(stream) == sse.OPENED
    with the_database_down():
        assert next(stream) == sse.KEEP_ALIVE  # its look failed, and it goes on
    connections.close_all()
    store.post_task(sender="user:ops", to="device:a", title="back")
    chunk = next(stream)
    while chunk == sse.KEEP_ALIVE:
        chunk = next(stream)
    assert chunk.startswith(b"id:") and b'"title":"back"' in chunk
    stream.close()


def test_a_pool_database_not_migrated_is_named_by_health_and_the_api(
    pool_dir, device_client, master_client, client, make_user
):
    """Misconfiguration, not an outage: each says which migrate to run, no retry is asked."""
    store = get_store()
    client.force_login(make_user("boss", role="admin", superuser=True)[0])
    hint = "The database has no table taskpool_db_message: run manage.py migrate --database pool."
    with connections["pool"].cursor() as cursor:
        cursor.execute("ALTER TABLE taskpool_db_message RENAME TO taskpool_db_message_away")
    try:
        (check,) = store.health()
        assert check.name == "pool_database"
        assert "run manage.py migrate --database pool" in check.problem
        for refused in (
            device_client.get("/pool/pending"),
            device_client.get("/pool/pending", {"wait": "1"}),
            device_client.get("/pool/stream"),
            device_client.post("/pool/heartbeat", {}, format="json"),
            master_client.post("/pool/task", {"to": "device:pi-1", "title": "t"}, format="json"),
        ):
            assert refused.status_code == 500 and refused["Content-Type"] == "application/json"
            assert refused.json() == {"detail": hint}
            assert not refused.has_header("Retry-After")
        page = client.get("/admin/taskpool/task/")  # in the admin's frame, not a bare 500
        assert page.status_code == 500
        assert hint in page.content.decode() and 'id="site-name"' in page.content.decode()
        with pytest.raises(CommandError, match=re.escape(hint)):
            call_command("taskpool_export", str(pool_dir / "export"))
        with pytest.raises(DatabaseError) as failed:
            store.pending_for("pi-1")  # as the commands and the job ticker meet it
        assert migrate_hint(failed.value) == hint
    finally:
        with connections["pool"].cursor() as cursor:
            cursor.execute("ALTER TABLE taskpool_db_message_away RENAME TO taskpool_db_message")
    assert device_client.get("/pool/pending").status_code == 200


@pytest.mark.parametrize(
    "page", ["/admin/taskpool/dashboard/", "/admin/taskpool/task/", "/admin/taskpool/deviceuser/"]
)
def test_the_admin_pages_that_read_the_pool_are_a_503_while_its_database_is_down(
    pool_dir, client, make_user, make_device, page
):
    """The staff's session lives in the site's database; the pool's is down: the page says so
    in the admin's frame, not as a server error, and is back once the database is."""
    make_device("pi-1")  # a row whose pending count and last message the list reads
    user, _ = make_user("boss", role="admin", superuser=True)
    client.force_login(user)
    assert client.get(page).status_code == 200
    with the_database_down():
        answer = client.get(page)
    assert answer.status_code == 503, answer.content[:2000]
    text = answer.content.decode()
    assert 'id="unavailable"' in text and 'id="site-name"' in text
    assert "The database does not answer now" in text
    assert client.get(page).status_code == 200
