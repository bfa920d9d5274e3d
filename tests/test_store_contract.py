"""The store contract, run against every store: each class below is one store.

The contract's tests live in ``tests/contract/`` as mixins (as Django's session
backends share one suite); a store that passes them keeps every rule the API
and the admin rely on. The database store's run needs the PostgreSQL named by
``TASKPOOL_TEST_POSTGRES`` and is skipped without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskpool.stores.database.store import DatabaseStore
from taskpool.stores.jsonl import JsonlStore
from tests.contract.jobs import JobsContract
from tests.contract.lifecycle import LifecycleContract
from tests.contract.log import LogContract
from tests.contract.overview import OverviewContract
from tests.contract.support import Clock

ON_POSTGRES = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not os.environ.get("TASKPOOL_TEST_POSTGRES"),
        reason="TASKPOOL_TEST_POSTGRES is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)",
    ),
    pytest.mark.django_db(transaction=True, databases=["default", "pool"]),
]


@pytest.fixture
def clock() -> Clock:
    return Clock()


class TestJsonlStore(LifecycleContract, LogContract, JobsContract, OverviewContract):
    @pytest.fixture
    def pool(self, tmp_path: Path, clock: Clock):
        store = JsonlStore(tmp_path / "contract", fsync=False, clock=clock)
        yield store
        store.close()

    def restarted(self, pool: JsonlStore) -> JsonlStore:
        """A new process's view of the same files: the index rebuilt from them."""
        return JsonlStore(pool.directory, fsync=False, clock=pool._clock)


@pytest.mark.usefixtures("transactional_db")
class TestDatabaseStore(LifecycleContract, LogContract, JobsContract, OverviewContract):
    pytestmark = ON_POSTGRES

    @pytest.fixture
    def pool(self, clock: Clock):
        store = DatabaseStore("pool", clock=clock)
        yield store
        store.close()

    def restarted(self, pool: DatabaseStore) -> DatabaseStore:
        """Another process on the same database: nothing kept in memory is shared."""
        return DatabaseStore(pool.alias, clock=pool._clock)
