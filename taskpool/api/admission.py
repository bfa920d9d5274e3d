"""Asking again, for many waiting devices at once, whether their tokens still hold.

A long-poll or a stream hands tasks over long after it authenticated: meanwhile
staff may have revoked its token (by issuing a new one) or invalidated its
device. Before it hands anything over it asks again. A task for every device
wakes thousands of waiters together, so the waiters of one event loop that ask
together share one query per thousand devices, instead of a query each in the
one thread Django keeps for database work. The query is only a filter: a device
it finds no longer admitted is authenticated again in full, which gives the
refusal its exact status and words (401 for a revoked token, 403 for a device
no longer validated).
"""

from __future__ import annotations

import asyncio
import weakref

from django.db import DatabaseError

from taskpool.api.plain import in_django_thread
from taskpool.models import DeviceUser

#: Devices asked about in one query.
BATCH = 1000


def sessions_holding(asked: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Of (device id, token session) pairs, those whose device still has that session and
    is validated: what authentication and ``IsDevice`` would let through."""
    holding: set[tuple[str, str]] = set()
    for start in range(0, len(asked), BATCH):
        chunk = asked[start : start + BATCH]
        rows = DeviceUser.objects.filter(pk__in={device for device, _ in chunk}).values_list(
            "pk", "user_session", "validated"
        )
        current = {device: (session, validated) for device, session, validated in rows}
        holding.update(pair for pair in chunk if current.get(pair[0]) == (pair[1], True))
    return holding


class Admissions:
    """One event loop's questions about devices' tokens, answered together."""

    def __init__(self) -> None:
        self._asked: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self._answering: set[asyncio.Task[None]] = set()

    async def holds(self, device_id: str, session: str) -> bool:
        """Whether the device is still validated and its session is still ``session``.

        A database that does not answer says nothing either way: ``True``.
        """
        loop = asyncio.get_running_loop()
        pair = (device_id, session)
        future = self._asked.get(pair)
        if future is None:
            future = self._asked[pair] = loop.create_future()
            if len(self._asked) == 1:
                # After the waiters woken with this one, already due to run, have asked.
                loop.call_soon(self._answer_all)
        # Shielded: a waiter whose client left must not cancel the others' answer.
        return await asyncio.shield(future)

    def _answer_all(self) -> None:
        asked, self._asked = self._asked, {}
        task = asyncio.ensure_future(self._answer(asked))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, asked: dict[tuple[str, str], asyncio.Future[bool]]) -> None:
        try:
            holding = await in_django_thread(sessions_holding, list(asked))
        except DatabaseError:
            holding = set(asked)
        except asyncio.CancelledError:
            for future in asked.values():
                future.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - each waiter gets it, as from its own query
            for future in asked.values():
                if not future.done():
                    future.set_exception(error)
            return
        for pair, future in asked.items():
            if not future.done():
                future.set_result(pair in holding)


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Admissions] = (
    weakref.WeakKeyDictionary()
)


def admissions() -> Admissions:
    """The running event loop's ``Admissions``."""
    loop = asyncio.get_running_loop()
    found = _by_loop.get(loop)
    if found is None:
        found = _by_loop[loop] = Admissions()
    return found
