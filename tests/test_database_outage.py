"""A pool on PostgreSQL whose connections are cut (a restart, a failover): the requests
that meet a dead connection get the API's 503 with ``Retry-After``, and every thread
that held one connects afresh for the next request, the waiting endpoints' too."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from django.db import OperationalError, connections

from taskpool.stores import get_store

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


def cut_the_pools_connections() -> int:
    """Terminate every session on the pool's database but the one doing it; how many."""
    params = connections["pool"].get_connection_params()
    options = {k: v for k, v in params.items() if isinstance(v, (str, int)) and v != ""}
    with psycopg.connect(**options, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def test_a_request_that_meets_a_cut_connection_is_a_503_and_the_next_reconnects(
    pool_dir, device_client
):
    assert device_client.get("/pool/pending").status_code == 200
    assert cut_the_pools_connections() >= 1
    cut = device_client.get("/pool/pending")
    assert cut.status_code == 503, cut.content
    assert cut["Content-Type"] == "application/json"
    assert cut["Retry-After"]
    assert "database" in cut.json()["detail"]
    assert device_client.get("/pool/pending").status_code == 200


def test_a_worker_thread_whose_connection_was_cut_connects_again(pool_dir):
    """The threads the waiting endpoints read the pool from outlive any one request."""
    store = get_store()
    with ThreadPoolExecutor(max_workers=1) as worker:  # one thread, kept
        before = worker.submit(store.end_cursor).result()
        cut_the_pools_connections()
        with pytest.raises(OperationalError, match="terminating connection"):
            worker.submit(store.end_cursor).result()  # the one read that meets the cut
        assert worker.submit(store.end_cursor).result() == before
        worker.submit(connections.close_all).result()
