"""Reads that meet a connection cut since their thread last used it connect again.

The threads that read the pool for waiting requests (long-polls, streams,
the watcher) outlive any one request, so Django's checks at each request's
start never look at their connections. After a database restart or a
failover, each such thread's next read would meet its cut connection and
fail, though the database answers again: a 503 for a long-poll, an ended
stream. A read is safe to run twice, so the first failure on a connection
that no longer answers closes it, and the read runs once more on a fresh one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from django.db import InterfaceError, OperationalError, connections

Args = ParamSpec("Args")
Result = TypeVar("Result")


class OnAlias(Protocol):
    alias: str


Store = TypeVar("Store", bound=OnAlias)


def reconnecting(
    read: Callable[Concatenate[Store, Args], Result],
) -> Callable[Concatenate[Store, Args], Result]:
    """``read``, run once more on a fresh connection when its thread's had been cut."""

    @functools.wraps(read)
    def read_again_once_cut(store: Store, *args: Args.args, **kwargs: Args.kwargs) -> Result:
        try:
            return read(store, *args, **kwargs)
        except (OperationalError, InterfaceError):
            connection = connections[store.alias]
            if connection.in_atomic_block or connection.is_usable():
                raise  # a caller's transaction, or a database that answers: not a cut
            connection.close()
            return read(store, *args, **kwargs)

    return read_again_once_cut
