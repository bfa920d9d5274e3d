"""Domain errors, raised by the store and the message layer.

They know nothing of HTTP; ``taskpool.api.errors`` maps each to a status code.
"""

from __future__ import annotations

import errno

from django.core.exceptions import ImproperlyConfigured


class PoolError(Exception):
    """Base class of every refusal the pool makes."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The request field at fault, when there is one.
        self.field = field


class InvalidMessage(PoolError):
    """A message or address that breaks the format of a message."""


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

    #: Errors of the operating system that mean the storage cannot take a write now: among
    #: them a pool file or directory the server may not write (a file restored as root, a
    #: directory made read-only), which ``/pool/health`` names too.
    STORAGE_ERRNOS = frozenset(
        {
            errno.ENOSPC,
            errno.EDQUOT,
            errno.EFBIG,
            errno.EIO,
            errno.EROFS,
            errno.EACCES,
            errno.EPERM,
        }
    )

    @classmethod
    def from_os_error(cls, error: OSError) -> StoreUnavailable:
        """The refusal for a write the operating system refused: ``StoreFull`` when out of room."""
        reason = error.strerror or str(error)
        refusal = StoreFull if error.errno in StoreFull.SPACE_ERRNOS else StoreUnavailable
        return refusal(f"The pool cannot store the message now ({reason}); try again later.")


class DayFileMissing(StoreUnavailable):
    """A day file whose name is there but whose lines are not: a symbolic link to nothing.

    Read as a day without messages, its tasks would leave the pool and its
    answers would make tasks pending again, without a word.
    """


class DataDirMissing(StoreUnavailable):
    """The pool's data directory is gone while the server runs (moved away, a disk not mounted).

    The store does not make it again: on a mount point that failed, the lines
    would go to the disk underneath, beside a pool that comes back later.
    """

    def __init__(self) -> None:
        super().__init__(
            "The pool's data directory is missing: nothing can be read or stored until it "
            "is back (moved away, or a disk not mounted?)."
        )


class ArchivedDayUnreadable(StoreUnavailable):
    """An archived day whose file cannot be read whole: cut short, or not gzip at all.

    Read as far as it goes, it would show part of a day as the whole of it.
    """


class StoreFull(StoreUnavailable):
    """The storage has no room for the message (a full disk, a quota): nothing was stored."""

    #: Errors of the operating system that mean there is no room.
    SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class EnrollmentRefused(PoolError):
    """An enrollment this server does not take: enrollment off, or a wrong enrollment key."""


class DeviceExists(PoolError):
    """An enrollment for a device id that is already registered (validated or not)."""


class WrongEnrollmentSecret(PoolError):
    """A token asked for with a secret that is not the one the enrollment was given."""


class UnknownDevice(PoolError):
    """A device id that names no registered device."""


class TokenCollected(PoolError):
    """An enrolled device's token, asked for again after it was handed out once."""


class DayInHorizon(PoolError):
    """A day that can still hold a pending task: it may not be removed from the pool."""


class StoreImproperlyConfigured(ImproperlyConfigured):
    """``TASKPOOL["STORE"]`` or its options cannot be used."""
