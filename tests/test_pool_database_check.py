"""``manage.py check --database ALIAS`` names a pool's database that ``migrate`` left out.

``migrate`` migrates ``default`` alone; a site whose pool has a database of
its own must migrate that one too, and an upgrade's new migration is as easy
to leave out. The check queries the database only when asked to
(``--database``, and ``migrate`` for the database it migrates).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks
from django.db import connections
from django.test.utils import CaptureQueriesContext

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("TASKPOOL_TEST_POSTGRES"), reason="TASKPOOL_TEST_POSTGRES is not set"
    ),
    pytest.mark.django_db(transaction=True, databases=["default", "pool"]),
]

DATABASE_STORE = "taskpool.stores.database.DatabaseStore"
MIGRATIONS = (
    Path(__file__).resolve().parent.parent / "taskpool" / "stores" / "database" / "migrations"
)
#: An empty schema of the test database stands for a pool database never migrated.
SCHEMA = "never_migrated"


def pool_database_checks(**kwargs) -> list[checks.CheckMessage]:
    return [issue for issue in checks.run_checks(**kwargs) if issue.id == "taskpool.W003"]


@pytest.fixture
def database_store(settings):
    settings.TASKPOOL = {**settings.TASKPOOL, "STORE": DATABASE_STORE}


@pytest.fixture
def site(tmp_path):
    """Runs ``manage.py`` commands of a site whose pool's database is an empty schema."""
    with connections["pool"].cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {SCHEMA}")
    (tmp_path / "site_settings.py").write_text(
        "from tests.settings import *\n"
        f"DATABASES['default'] = {{**DATABASES['default'], 'NAME': {str(tmp_path / 'db')!r}}}\n"
        "DATABASES['pool'] = {**DATABASES['pool'], "
        f"'NAME': {connections['pool'].settings_dict['NAME']!r}, "
        f"'OPTIONS': {{'options': '-c search_path={SCHEMA}'}}}}\n"
        f"TASKPOOL = {{**TASKPOOL, 'STORE': {DATABASE_STORE!r}}}\n"
    )
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "site_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
    }

    def manage(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "django", *arguments],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )

    yield manage
    with connections["pool"].cursor() as cursor:
        cursor.execute(f"DROP SCHEMA {SCHEMA} CASCADE")


def test_check_database_names_the_pool_database_left_out_of_migrate(site):
    checked = site("check", "--database", "pool")
    assert checked.returncode == 0, checked.stderr  # a warning: migrate runs it too
    assert "taskpool.W003" in checked.stderr
    assert "The pool's tables are missing on database 'pool'" in checked.stderr
    assert "run manage.py migrate --database pool" in checked.stderr

    plain = site("check")
    assert plain.returncode == 0, plain.stderr
    assert "taskpool.W003" not in plain.stderr + plain.stdout

    migrated = site("migrate", "--database", "pool")
    assert migrated.returncode == 0, migrated.stderr
    assert "Applying taskpool_database.0001_initial... OK" in migrated.stdout
    checked = site("check", "--database", "pool")
    assert checked.returncode == 0
    assert "taskpool.W003" not in checked.stderr + checked.stdout


def test_check_database_names_an_upgrades_migration_left_out(site):
    # An upgrade that brought the latest migration, not yet migrated on the pool's database.
    *_, before, latest = sorted(path.stem for path in MIGRATIONS.glob("0*.py"))
    assert site("migrate", "--database", "pool").returncode == 0
    undone = site("migrate", "--database", "pool", "taskpool_database", before)
    assert undone.returncode == 0, undone.stderr

    checked = site("check", "--database", "pool")

    assert "taskpool.W003" in checked.stderr
    assert f"taskpool_database.{latest} is not applied on database 'pool'" in checked.stderr
    assert "run manage.py migrate --database pool" in checked.stderr


def test_a_migrated_pool_database_passes(database_store):
    assert pool_database_checks(databases=["default", "pool"]) == []


def test_plain_check_does_not_query_the_pool_database(database_store):
    with CaptureQueriesContext(connections["pool"]) as queries:
        checks.run_checks()
    assert len(queries) == 0
    with CaptureQueriesContext(connections["pool"]) as queries:
        checks.run_checks(databases=["pool"])
    assert len(queries) > 0  # asked for: it looks


def test_no_check_of_the_pool_database_for_the_day_files():
    with CaptureQueriesContext(connections["pool"]) as queries:
        assert pool_database_checks(databases=["pool"]) == []
    assert len(queries) == 0


def test_an_unreachable_pool_database_is_a_check_error_not_a_traceback(tmp_path):
    """The operator asked about that database: say it does not answer, in the check's words."""
    (tmp_path / "unreachable_settings.py").write_text(
        "from tests.settings import *\n"
        f"DATABASES['default'] = {{**DATABASES['default'], 'NAME': {str(tmp_path / 'db')!r}}}\n"
        "DATABASES['pool'] = {**DATABASES['pool'], 'HOST': '127.0.0.1', 'PORT': '1'}\n"
        f"TASKPOOL = {{**TASKPOOL, 'STORE': {DATABASE_STORE!r}}}\n"
    )
    checked = subprocess.run(
        [sys.executable, "-m", "django", "check", "--database", "pool"],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "unreachable_settings",
            "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode != 0
    assert "Traceback" not in checked.stderr, checked.stderr
    assert "taskpool.E013" in checked.stderr
    assert "The pool's database 'pool' does not answer" in checked.stderr


def test_an_upgrade_keeps_each_tasks_record_as_it_was(site):
    """The task record column went from jsonb to text (jsonb refuses a NUL a meta may hold)."""
    import orjson

    assert site("migrate", "--database", "pool", "taskpool_database", "0005").returncode == 0
    record = {"claim": {"from": "device:a", "meta": {"note": "é", "n": 1.5}}, "cancellation": None}
    with connections["pool"].cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {SCHEMA}.taskpool_db_task (task_id, seq, day, sender, broadcast, "
            "any_one, expires_at, claimer, record, closed, status_bits, jobs, rollout) VALUES "
            "('msg_1', 1, '2026-06-03', 'user:ops', FALSE, TRUE, 0, 'a', %s::jsonb, NULL, 0, "
            "FALSE, FALSE)",
            [orjson.dumps(record).decode()],
        )
    migrated = site("migrate", "--database", "pool")
    assert migrated.returncode == 0, migrated.stderr
    with connections["pool"].cursor() as cursor:
        cursor.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'taskpool_db_task' AND column_name = 'record'",
            [SCHEMA],
        )
        assert cursor.fetchone() == ("text",)
        cursor.execute(f"SELECT record FROM {SCHEMA}.taskpool_db_task")
        (kept,) = cursor.fetchone()
    assert orjson.loads(kept) == record
