"""The device row's read and last_seen write, composed once: the same rows as the ORM's."""

from __future__ import annotations

from datetime import UTC, datetime

from taskpool.device_queries import device_by_id, record_last_seen
from taskpool.models import DeviceUser


def test_device_by_id_gives_what_the_orm_gives(make_device):
    make_device("pi-1")
    DeviceUser.objects.filter(pk="pi-1").update(
        enrollment_meta={"os": "raspbian", "n": [1, 2]}, enrollment_address="10.0.0.7"
    )
    found = device_by_id("pi-1")
    expected = DeviceUser.objects.get(pk="pi-1")
    fields = [field.attname for field in DeviceUser._meta.concrete_fields]
    assert {name: getattr(found, name) for name in fields} == {
        name: getattr(expected, name) for name in fields
    }
    assert found.enrollment_meta == {"os": "raspbian", "n": [1, 2]}
    assert found.last_seen is None and found.created_at.tzinfo is not None
    assert not found._state.adding
    assert device_by_id("pi-404") is None


def test_record_last_seen_writes_that_device_s_time_and_nothing_else(make_device):
    make_device("pi-1")
    make_device("pi-2")
    before = {device.pk: device for device in DeviceUser.objects.all()}
    moment = datetime(2026, 6, 3, 12, 30, 15, 123456, tzinfo=UTC)

    record_last_seen("pi-1", moment)

    after = {device.pk: device for device in DeviceUser.objects.all()}
    assert after["pi-1"].last_seen == moment  # to the microsecond, in UTC
    assert device_by_id("pi-1").last_seen == moment
    assert after["pi-2"].last_seen is None
    fields = [f.attname for f in DeviceUser._meta.concrete_fields if f.attname != "last_seen"]
    for pk in ("pi-1", "pi-2"):
        assert {name: getattr(after[pk], name) for name in fields} == {
            name: getattr(before[pk], name) for name in fields
        }


def test_record_last_seen_for_a_device_that_is_gone_changes_nothing(make_device):
    make_device("pi-1")
    record_last_seen("pi-404", datetime(2026, 6, 3, tzinfo=UTC))
    assert list(DeviceUser.objects.values_list("pk", "last_seen")) == [("pi-1", None)]


def test_a_database_that_refuses_the_last_seen_write_does_not_fail_the_poll(
    transactional_db, make_device, caplog
):
    """A read-only (or failing) database: the poll is answered, the figure waits.

    Outside a test's transaction, as a request runs; the database's own refusal, by a
    trigger that is dropped again (it is schema, which no flush removes).
    """
    from django.db import connection

    from tests.conftest import client_with

    device, token = make_device("pi-1")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TRIGGER read_only BEFORE UPDATE ON taskpool_deviceuser "
            "BEGIN SELECT RAISE(ABORT, 'the database is read-only'); END"
        )
    try:
        polled = client_with(token).get("/pool/pending")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER read_only")
    assert polled.status_code == 200, polled.content
    assert polled.json() == []
    device.refresh_from_db()
    assert device.last_seen is None
    assert any("last_seen of pi-1 not written" in r.getMessage() for r in caplog.records)
