"""How far the log can be read without ever skipping a row that commits late.

A row's ``seq`` is taken when it is written but the row is seen only once its
transaction commits, and transactions commit in any order. So the log is read
in ``(xid, seq)`` order (``xid``: the writing transaction's id, in the order
transaction ids are handed out), and only below the *horizon*: the smallest
id of a transaction that is still writing to the log. Every row below it is
committed (or never will be), so a reader that moves its cursor up to there
never passes a row that could still appear behind it.

Writers say they write: the first thing every transaction that appends to
the log does, before it has an id, is to take the advisory lock
``LOG_WRITERS`` shared (``register_writer``). The horizon is then the
smallest id among the transactions holding that lock, read from
``pg_locks`` (visible to every role), and at most the next id to be handed
out when it was read (a writer that registers later gets a later id). So
only the pool's own writers, each for a few milliseconds, ever hold readers
back: not a long transaction of another application or database on the
same server.

A writer whose host stops in the middle of its transaction (frozen, cut off
by the network) would hold every reader back, on every host, until its
connection is found dead. So each writer's transaction also bounds how long
it may sit idle between two statements (``WRITER_IDLE_SECONDS``): past that,
PostgreSQL ends the session, the transaction rolls back (its client never
got an answer, so nothing it was told was stored is lost), and the horizon
moves on.
"""

from __future__ import annotations

from typing import Any

#: The advisory lock every transaction appending to the log holds, shared.
LOG_WRITERS = 0x7461736B6C6F6721  # "tasklog!"
#: Seconds a writer's transaction may wait between two statements before PostgreSQL ends
#: it: far above a live writer's pauses (milliseconds), and the longest one host that
#: stops mid-write holds back what every other host's readers see.
WRITER_IDLE_SECONDS = 5.0
_HIGH, _LOW = LOG_WRITERS >> 32, LOG_WRITERS & 0xFFFFFFFF

#: The horizon as a 64-bit transaction id. ``pg_locks`` gives 32-bit ids: each is put
#: back in the epoch of the next id to be handed out (or the one before, once it wrapped).
HORIZON_QUERY = f"""
WITH next AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS id),
writing AS (
    SELECT min(t.transactionid::text::bigint) AS low32
    FROM pg_locks w
    JOIN pg_locks t ON t.pid = w.pid AND t.locktype = 'transactionid'
        AND t.mode = 'ExclusiveLock' AND t.granted
    WHERE w.locktype = 'advisory' AND w.granted AND w.classid = {_HIGH}
      AND w.objid = {_LOW} AND w.objsubid = 1
      AND w.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    GROUP BY w.pid
)
SELECT least(
    next.id,
    min(CASE WHEN (next.id >> 32 << 32) + writing.low32 <= next.id
             THEN (next.id >> 32 << 32) + writing.low32
             ELSE ((next.id >> 32) - 1 << 32) + writing.low32 END)
)
FROM next LEFT JOIN writing ON TRUE
GROUP BY next.id
"""


#: The SQL that ends this transaction once it waits on its client longer than the
#: parameter (``idle``). PostgreSQL arms the timeout when a statement ends, but not
#: after a pipelined batch (psycopg's ``executemany``): a bound transaction makes each
#: of its changes in one statement.
BOUND_IDLE = "set_config('idle_in_transaction_session_timeout', %s, true)"


def idle(seconds: float) -> str:
    """``seconds`` as ``BOUND_IDLE`` takes it."""
    return f"{max(1, round(seconds * 1000))}ms"


def horizon(cursor: Any) -> int:
    """The transaction id below which every row of the log is there to read (see above)."""
    cursor.execute(HORIZON_QUERY)
    return cursor.fetchone()[0]


def register_writer(cursor: Any, idle_seconds: float = WRITER_IDLE_SECONDS) -> None:
    """Say this transaction appends to the log: call first, before anything gives it an id.

    The transaction is ended by PostgreSQL if it then waits on its client for
    more than ``idle_seconds`` between two statements.
    """
    cursor.execute(
        f"SELECT pg_advisory_xact_lock_shared(%s), {BOUND_IDLE}", [LOG_WRITERS, idle(idle_seconds)]
    )
