"""The two statements a device's request makes on its row, composed once by the ORM.

Every request a device makes reads its row (authentication), and a poll
writes the time it was last seen. ``DeviceUser.objects.filter(pk=...)``
spends several times longer composing each of these than the database
spends running it, and a fleet asks them hundreds of times a second. Here
the ORM composes each statement once per database (its own SQL, column
converters and value preparation, kept), and each request only runs it.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any, cast

from django.db import connections, router, transaction
from django.db.models import sql

from taskpool.models import DeviceUser


def device_by_id(device_id: str) -> DeviceUser | None:
    """The device, or None."""
    database = router.db_for_read(DeviceUser)
    connection = connections[database]
    statement, names, converters = _device_query(database)
    with connection.cursor() as cursor:
        cursor.execute(statement, [device_id])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for position, (functions, expression) in converters.items():
        for convert in functions:
            values[position] = convert(values[position], expression, connection)
    return DeviceUser.from_db(database, names, values)


def record_last_seen(device_id: str, moment: datetime) -> None:
    """``DeviceUser.objects.filter(pk=device_id).update(last_seen=moment)``, composed once."""
    database = router.db_for_write(DeviceUser)
    connection = connections[database]
    statement = _last_seen_update(database)
    value = DeviceUser._meta.get_field("last_seen").get_db_prep_save(moment, connection)
    with transaction.mark_for_rollback_on_error(using=database), connection.cursor() as cursor:
        cursor.execute(statement, [value, device_id])


@functools.cache
def _device_query(database: str) -> tuple[str, list[str], dict[int, Any]]:
    compiler = (
        DeviceUser.objects.using(database).filter(pk="").order_by().query.get_compiler(database)
    )
    statement, _params = compiler.as_sql()
    columns = [column for column, _sql, _alias in compiler.select]
    return (
        statement,
        [column.target.attname for column in columns],
        compiler.get_converters(columns),
    )


@functools.cache
def _last_seen_update(database: str) -> str:
    """``UPDATE … SET last_seen = %s WHERE id = %s``, as the ORM writes it for ``database``."""
    query = cast(
        sql.UpdateQuery,
        DeviceUser.objects.using(database).filter(pk="").query.chain(sql.UpdateQuery),
    )
    query.add_update_values({"last_seen": datetime(2000, 1, 1, tzinfo=UTC)})
    statement, params = query.get_compiler(database).as_sql()
    if len(params) != 2 or params[1] != "":  # the value, then the primary key: checked once
        raise RuntimeError(f"Unexpected parameters for the last_seen update: {params!r}")
    return statement
