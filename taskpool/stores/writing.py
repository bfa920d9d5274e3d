"""The writes of the store interface: each rule that decides a write, once for every store.

``BaseStore`` inherits these. A store supplies ``transact`` (run a decision
atomically with every other writer, and store its message); the decisions
themselves (``taskpool.stores.rules``) and the checks of what a caller may
send are here, so the day files and the database store refuse and accept
the same requests.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from taskpool import metrics
from taskpool.exceptions import InvalidMessage
from taskpool.jobs import job_meta
from taskpool.messages import DEVICE_STATUSES, Message
from taskpool.stores import rules
from taskpool.stores.rules import Claim, Decision, Ledger, Posted
from taskpool.stores.validation import (
    RESPONSE_META_RESERVED,
    TASK_META_RESERVED,
    answer_meta,
    own_meta,
    task_address,
    task_title,
)


class StoreWrites(abc.ABC):
    """Posting tasks, answers and heartbeats, claims, cancels and the backend's job lines."""

    #: Seconds a task stays open without an ``expires_at`` of its own (``BaseStore``'s).
    task_ttl: float

    @abc.abstractmethod
    def now(self) -> float:
        """The pool's time (``BaseStore``'s)."""

    @abc.abstractmethod
    def transact(
        self, decide: Callable[[Ledger, float], Decision], *, reads_pool: bool = True
    ) -> Any:
        """Run ``decide(ledger, now)`` atomically with every other writer, and store its message.

        While ``decide`` runs, no other writer in any process (on any host, for
        a store shared between hosts) can store a message, and the ledger
        shows every message stored before. ``decide`` returns the message to
        store (``None``: nothing) and the result, which this returns once the
        message is durably stored; a ``PoolError`` it raises stores nothing.
        ``now`` is the time the message is stamped with. With
        ``reads_pool=False`` the decision reads nothing (a heartbeat), and a
        store may skip catching up before it.

        Raises ``MessageTooLarge`` for a message over ``MAX_MESSAGE_BYTES``,
        and ``StoreUnavailable`` when the message cannot be stored now.
        """

    def _write(
        self,
        decide: Callable[[Ledger, float], Decision],
        *,
        reads_pool: bool = True,
        idle_checks_count: bool = True,
    ) -> Any:
        """``transact``, with the decision's and the write's times and the message counted."""
        return metrics.measured_write(
            self.transact, decide, reads_pool=reads_pool, idle_checks_count=idle_checks_count
        )

    def post_task(
        self,
        *,
        sender: str,
        to: str,
        title: str,
        body: str = "",
        meta: dict[str, Any] | None = None,
        ttl: float | None = None,
        expires_at: datetime | None = None,
        mode: str | None = None,
        idempotency_key: str | None = None,
        retries: dict[str, Any] | None = None,
        timeout: dict[str, Any] | None = None,
        rollout: dict[str, Any] | None = None,
        abort: dict[str, Any] | None = None,
        not_before: datetime | None = None,
    ) -> Posted:
        """Store a task from ``sender`` (``user:…`` or ``backend``) to devices.

        ``to`` must be a device address. The task expires after ``ttl``
        seconds or at ``expires_at`` (aware), by default after ``TASK_TTL``,
        never later; ``meta.expires_at`` is always written. ``mode="any"``
        makes an any-one task. ``retries``, ``timeout``, ``rollout``,
        ``abort`` and ``not_before`` make a job that looks after itself
        (``taskpool.jobs``), written into ``meta`` under those names. With
        ``idempotency_key``, a repeat of the same request by the same sender
        returns the first message unchanged (``created=False``); the key with
        another request raises ``IdempotencyConflict``.
        """
        address = task_address(to)
        title = task_title(title)
        if mode not in (None, "any"):
            raise InvalidMessage('mode is "any" or absent.', field="mode")
        meta = own_meta(meta, TASK_META_RESERVED)
        if mode is not None:
            meta["mode"] = mode
        meta.update(
            job_meta(
                now=self.now(),
                task_ttl=self.task_ttl,
                mode=mode,
                retries=retries,
                timeout=timeout,
                rollout=rollout,
                abort=abort,
                not_before=not_before,
            )
        )
        if idempotency_key is not None:
            meta["idempotency_key"] = idempotency_key
        return self._write(
            partial(
                rules.task,
                sender=sender,
                address=address,
                title=title,
                body=body,
                meta=meta,
                ttl=ttl,
                expires_at=expires_at,
                task_ttl=self.task_ttl,
                idempotency_key=idempotency_key,
            )
        )

    def post_response(
        self,
        *,
        device_id: str,
        parent_id: str,
        status: str,
        title: str = "",
        body: str = "",
        meta: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Posted:
        """Store a device's answer (``progress``, ``done``, ``failed`` or ``rejected``).

        Raises ``UnknownTask`` if ``parent_id`` names no task, ``NotAddressed``
        if the task is not for this device, ``AlreadyAnswered`` after the
        device's terminal answer, ``TaskClosed`` for a cancelled or expired
        task, ``ClaimedByOther`` for an any-one task another device holds. The
        first answer to an unclaimed any-one task claims it, atomically.
        """
        if status not in DEVICE_STATUSES:
            raise InvalidMessage(
                f"status must be one of {', '.join(DEVICE_STATUSES)}.", field="status"
            )
        meta = own_meta(meta, RESPONSE_META_RESERVED)
        answer_meta(meta)
        if meta.get("status", status) != status:
            raise InvalidMessage("meta.status differs from status.", field="meta")
        meta["status"] = status
        if idempotency_key is not None:
            meta["idempotency_key"] = idempotency_key
        return self._write(
            partial(
                rules.response,
                device_id=device_id,
                parent_id=parent_id,
                title=title,
                body=body,
                meta=meta,
                idempotency_key=idempotency_key,
            )
        )

    def post_heartbeat(
        self, *, device_id: str, body: str = "", meta: dict[str, Any] | None = None
    ) -> Message:
        """Store a heartbeat from a device to the backend.

        It takes no idempotency key: nothing it says depends on being said once.
        """
        meta = own_meta(meta, ("idempotency_key",))
        decide = partial(rules.heartbeat, device_id=device_id, body=body, meta=meta)
        return self._write(lambda _ledger, now: decide(now), reads_pool=False)

    def claim(
        self, *, device_id: str, parent_id: str | None = None, idempotency_key: str | None = None
    ) -> Claim | None:
        """Claim the any-one task ``parent_id``, or the oldest claimable one for the device.

        Atomic across processes: of two devices claiming at once, one wins
        and the other gets ``ClaimedByOther``. Returns ``None`` when nothing
        is claimable; a repeated claim by the holder returns its first claim
        with ``created=False``. ``NotClaimable`` for a task that is not any-one.
        """
        meta: dict[str, Any] = {"status": "claimed"}
        if idempotency_key is not None:
            meta["idempotency_key"] = idempotency_key
        return self._write(
            partial(
                rules.claim,
                device_id=device_id,
                parent_id=parent_id,
                meta=meta,
                idempotency_key=idempotency_key,
            )
        )

    def cancel(
        self,
        *,
        sender: str,
        task_id: str,
        reason: str = "",
        idempotency_key: str | None = None,
    ) -> Posted:
        """Store a ``cancelled`` response from ``sender``: the task leaves every pending list.

        ``UnknownTask`` for an unknown id; ``TaskClosed`` if it is already
        cancelled, expired or finished on every device.
        """
        meta: dict[str, Any] = {"status": "cancelled"}
        if idempotency_key is not None:
            meta["idempotency_key"] = idempotency_key
        return self._write(
            partial(
                rules.cancel,
                sender=sender,
                task_id=task_id,
                reason=reason,
                meta=meta,
                idempotency_key=idempotency_key,
            )
        )

    def import_lines(self, lines: list[bytes]) -> tuple[int, int]:
        """Store day-file lines as they are, in order, with what each changes (an import).

        Each line keeps its id and time. A line whose message id is stored
        already is skipped, so importing twice stores nothing twice. Returns
        (stored, skipped). ``InvalidMessage`` for a line that is not a message.
        Only for stores with ``supports_import``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not import day files.")

    # Keeping time for jobs -------------------------------------------------

    @abc.abstractmethod
    def open_job_tasks(self) -> list[str]:
        """The ids of the open tasks with job options (retries, timeout, rollout, abort,
        start time), which may be owed a line as time passes (``taskpool.ticker``)."""

    def transition(
        self, task_id: str, registered_devices: Callable[[], list[str]]
    ) -> Message | None:
        """Write the next line the backend owes the job task now, if any (see
        ``rules.transition``); each is written once, whoever else keeps time.
        ``registered_devices()`` lists the devices a ``device:*`` rollout offers it to."""
        return self._write(
            partial(rules.transition, task_id=task_id, registered_devices=registered_devices),
            idle_checks_count=False,
        )
