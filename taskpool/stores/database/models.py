"""The tables of ``DatabaseStore``.

- ``StoredMessage``: the log, append-only. Each row is one message as the
  day files would hold it (``line``, byte for byte), with the columns the
  store looks things up by. Rows are read in ``(xid, seq)`` order: ``xid``
  is the writing transaction's id, so a reader that only reads below the
  oldest transaction still running never skips a row that commits late
  (sequence values commit out of order).
- ``TaskRecord``: each task's state for decisions: whether it is open, who
  holds an any-one task, its cancellation.
- ``Execution``: one task on one device: the device's last answer, and
  whether the task is pending for it (``active``), so that a device's
  pending list is one index range. Broadcasts get a device's row when the
  device first polls after them (or answers).
- ``IdempotencyKey``: the first message each sender stored with a key.
- ``DeviceState``: per device, how far broadcasts were given rows, and when
  it was last heard from.
"""

from __future__ import annotations

from django.db import models


class StoredMessage(models.Model):
    seq = models.BigAutoField(primary_key=True)
    #: The id of the transaction that wrote the row (set by the database).
    xid = models.BigIntegerField()
    message_id = models.CharField(max_length=255, unique=True)
    day = models.DateField()
    ts = models.CharField(max_length=32)
    kind = models.CharField(max_length=16)
    sender = models.CharField(max_length=255)
    recipient = models.TextField()
    parent_id = models.CharField(max_length=255, null=True)  # noqa: DJ001 - null as in the message
    #: The message's JSON line, as a day file holds it (without the newline).
    line = models.TextField()
    #: A response's ``meta.status`` (``None`` for other messages): the dashboard
    #: counts and lists failures by it.
    status = models.CharField(max_length=16, null=True)  # noqa: DJ001 - null: not a response

    class Meta:
        db_table = "taskpool_db_message"
        indexes = [
            models.Index(fields=["xid", "seq"], name="tp_message_log"),
            models.Index(fields=["day", "xid", "seq"], name="tp_message_day"),
            models.Index(
                fields=["parent_id", "xid", "seq"],
                name="tp_message_parent",
                condition=models.Q(parent_id__isnull=False),
            ),
            models.Index(fields=["sender", "xid", "seq"], name="tp_message_sender"),
            # The dashboard's activity per hour, counted from the index alone.
            models.Index(fields=["ts"], include=["kind", "status"], name="tp_message_ts"),
            models.Index(
                fields=["xid", "seq"],
                name="tp_message_failure",
                condition=models.Q(status__in=["failed", "timed_out"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.message_id}"


class TaskRecord(models.Model):
    task_id = models.CharField(max_length=255, primary_key=True)
    #: The task message's row: the order tasks are pending in.
    seq = models.BigIntegerField(unique=True)
    day = models.DateField()
    sender = models.CharField(max_length=255)
    broadcast = models.BooleanField()
    any_one = models.BooleanField()
    expires_at = models.FloatField()
    #: The device holding an any-one task.
    claimer = models.CharField(max_length=255, null=True)  # noqa: DJ001 - null: nobody holds it
    #: ``TaskState.task_record()`` as JSON text: the claim and the cancellation. Text, not
    #: jsonb, which refuses the NUL character that a message's meta may hold.
    record = models.TextField(default="{}")
    #: ``None`` while open, else finished, cancelled or expired.
    closed = models.CharField(max_length=16, null=True)  # noqa: DJ001 - null: still open
    #: Once closed, its execution statuses (``executions.statuses_to_bits``).
    status_bits = models.IntegerField(default=0)
    #: Whether it has job options (``taskpool.jobs``): time may owe it lines.
    jobs = models.BooleanField(default=False)
    #: Whether a rollout offers it device by device (broadcasts get no rows until offered).
    rollout = models.BooleanField(default=False)
    #: Pending for no one before this time (epoch seconds).
    not_before = models.FloatField(null=True)
    #: ``TaskState.offered_to_unheard()``: whether a device that has not answered it is
    #: offered it (the row a broadcast gives a device is active, and counted, by this).
    offered_to_unheard = models.BooleanField(default=True, db_default=True)

    class Meta:
        db_table = "taskpool_db_task"
        indexes = [
            models.Index(
                fields=["seq"],
                name="tp_task_open_broadcast",
                condition=models.Q(broadcast=True, closed__isnull=True),
            ),
            models.Index(
                fields=["seq"], name="tp_task_broadcast", condition=models.Q(broadcast=True)
            ),
            models.Index(
                fields=["expires_at"],
                name="tp_task_open_expiry",
                condition=models.Q(closed__isnull=True),
            ),
            models.Index(
                fields=["seq"],
                name="tp_task_open_jobs",
                condition=models.Q(jobs=True, closed__isnull=True),
            ),
            models.Index(fields=["sender", "seq"], name="tp_task_sender"),
            models.Index(fields=["day", "seq"], name="tp_task_day"),
            # The dashboard's closed tasks per day and status, from the index alone.
            models.Index(
                fields=["day", "status_bits"],
                name="tp_task_day_closed",
                condition=models.Q(closed__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return self.task_id


class Execution(models.Model):
    task_id = models.CharField(max_length=255)
    device_id = models.CharField(max_length=255)
    #: The task's ``seq``: a device's pending tasks in order.
    seq = models.BigIntegerField()
    #: The device's last answer (``pending`` before any).
    status = models.CharField(max_length=16)
    #: When it answered (its ``ts``).
    updated = models.CharField(max_length=32, default="")
    #: Whether the task is pending for the device, expiry aside (``TaskState.offered_to``).
    active = models.BooleanField()
    #: For a job with retries: the attempt the device is on.
    attempt = models.IntegerField(default=1)
    #: For a job: the device's attempts (``TaskState.device_record``).
    detail = models.JSONField(null=True)

    class Meta:
        db_table = "taskpool_db_execution"
        constraints = [
            models.UniqueConstraint(fields=["task_id", "device_id"], name="tp_execution_once")
        ]
        indexes = [
            models.Index(
                fields=["device_id", "seq"],
                name="tp_execution_pending",
                condition=models.Q(active=True),
            ),
            models.Index(fields=["device_id", "seq"], name="tp_execution_device"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} on {self.device_id}: {self.status}"


class IdempotencyKey(models.Model):
    sender = models.CharField(max_length=255)
    key = models.CharField(max_length=128)
    #: The message first stored with it.
    seq = models.BigIntegerField()

    class Meta:
        db_table = "taskpool_db_idempotency"
        constraints = [
            models.UniqueConstraint(fields=["sender", "key"], name="tp_idempotency_once")
        ]

    def __str__(self) -> str:
        return f"{self.sender}: {self.key}"


class DeviceState(models.Model):
    device_id = models.CharField(max_length=255, primary_key=True)
    #: The newest broadcast task this device has an ``Execution`` for, or was past.
    broadcast_mark = models.BigIntegerField(default=0)
    last_message = models.CharField(max_length=32, null=True)  # noqa: DJ001 - null: never heard
    last_heartbeat = models.CharField(max_length=32, null=True)  # noqa: DJ001 - null: never heard
    #: Its active ``Execution`` rows, as of the last fold of ``PendingChange`` rows.
    pending_rows = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        db_table = "taskpool_db_device"

    def __str__(self) -> str:
        return self.device_id


class PendingChange(models.Model):
    """How many active ``Execution`` rows a statement gave or took from a device.

    Written by triggers on the executions' table, so that no write path can
    forget it, and appended rather than updated, so that writers never wait
    on one another for a counter. A device's pending count is its
    ``DeviceState.pending_rows`` plus its changes not folded in yet; the store
    folds them in about once a second.
    """

    device_id = models.CharField(max_length=255)
    delta = models.BigIntegerField()

    class Meta:
        db_table = "taskpool_db_pending_change"
        indexes = [models.Index(fields=["device_id"], name="tp_pending_change_device")]

    def __str__(self) -> str:
        return f"{self.device_id}: {self.delta:+d}"
