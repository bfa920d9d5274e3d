"""Domain errors, raised by the store and the message layer.

They know nothing of HTTP; ``taskpool.api.errors`` maps each to a status code.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class PoolError(Exception):
    """Base class of every refusal the pool makes."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The request field at fault, when there is one.
        self.field = field


class InvalidMessage(PoolError):
    """A message or address that breaks the format (DESIGN 1)."""


class UnknownTask(PoolError):
    """A ``parent_id`` or task id that names no task in the pool's horizon."""


class NotAddressed(PoolError):
    """A device acting on a task not addressed to it."""


class AlreadyAnswered(PoolError):
    """A second terminal answer from the same device to the same task."""


class TaskClosed(PoolError):
    """The task is cancelled or expired, or its work is already done."""


class ClaimedByOther(PoolError):
    """An any-one task that another device holds."""


class AttemptEnded(PoolError):
    """An answer to an attempt that has ended (timed out, failed and retried, or another one)."""


class NotStarted(PoolError):
    """A task that does not start before its ``not_before``, or that a rollout has not
    offered to the device yet."""


class NotClaimable(PoolError):
    """A claim on a task that is not an any-one task."""


class MessageTooLarge(PoolError):
    """A message whose line would exceed ``MAX_MESSAGE_BYTES``."""


class IdempotencyConflict(PoolError):
    """An idempotency key reused with a different request."""


class InvalidCursor(PoolError):
    """A cursor that names no day file, or no line end in it."""


class StoreUnavailable(PoolError):
    """The store cannot take or read messages now (a full disk, a database that does not answer)."""


class DayInHorizon(PoolError):
    """A day that can still hold a pending task: it may not be removed from the pool."""


class StoreImproperlyConfigured(ImproperlyConfigured):
    """``TASKPOOL["STORE"]`` or its options cannot be used."""
