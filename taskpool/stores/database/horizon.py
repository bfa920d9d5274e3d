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
smallest id still running in the reader's snapshot, leaving out the ids
that ``pg_locks`` (visible to every role) shows held by a transaction that
does not hold that lock; and at most the snapshot's end (a writer that
registers later gets a later id). An id is left out only when it is seen to
be another's: a transaction takes the lock on its own id a moment after it
gets the id, and a writer caught in that moment, its id not yet in
``pg_locks``, must still hold readers back (else a reader passes its row
before it commits, and never reads it). So only the pool's own writers, each
for a few milliseconds, ever hold readers back: not a long transaction of
another application or database on the same server.

A writer whose host stops in the middle of its transaction (frozen, cut off
by the network) would hold every reader back, on every host, until its
connection is found dead. So each writer's transaction also bounds how long
it may sit idle between two statements (``WRITER_IDLE_SECONDS``): past that,
PostgreSQL ends the session, the transaction rolls back (its client never
got an answer, so nothing it was told was stored is lost), and the horizon
moves on.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("taskpool")

#: The advisory lock every transaction appending to the log holds, shared.
LOG_WRITERS = 0x7461736B6C6F6721  # "tasklog!"
#: Seconds a writer's transaction may wait between two statements before PostgreSQL ends
#: it: far above a live writer's pauses (milliseconds), and the longest one host that
#: stops mid-write holds back what every other host's readers see.
WRITER_IDLE_SECONDS = 5.0
_HIGH, _LOW = LOG_WRITERS >> 32, LOG_WRITERS & 0xFFFFFFFF

#: The horizon as a 64-bit transaction id: the smallest id still running in this
#: statement's snapshot, less the ids ``pg_locks`` shows held by a session that is not
#: one of the pool's writers (another application's transaction, a sweep); at most the
#: snapshot's ``xmax``. Beyond ``xmax`` are the ids handed out since the last
#: transaction ended (two writers in flight under load): not in the snapshot, they
#: count as later ones. A transaction takes the lock on its own id a moment after it
#: gets it, so a writer can be running with an id ``pg_locks`` does not show yet: it
#: counts as long as no session is seen holding that id without being a writer. The
#: locks are read once (``MATERIALIZED``), so the writers and the ids come from one look.
#: ``pg_locks`` gives 32-bit ids: they are compared with the snapshot's by their low 32
#: bits (ids running at once are less than 2**31 apart).
HORIZON_QUERY = f"""
WITH snapshot AS (SELECT pg_current_snapshot() AS s),
locks AS MATERIALIZED (
    SELECT pid, locktype, database, classid, objid, objsubid, transactionid, mode, granted
    FROM pg_locks
),
writers AS (
    SELECT pid FROM locks
    WHERE locktype = 'advisory' AND granted AND classid = {_HIGH} AND objid = {_LOW}
      AND objsubid = 1
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
),
others AS (
    SELECT t.transactionid::text::bigint AS low32 FROM locks t
    WHERE t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted
      AND NOT EXISTS (SELECT 1 FROM writers w WHERE w.pid = t.pid)
)
SELECT least(
    pg_snapshot_xmax(snapshot.s)::text::bigint,
    (SELECT min(x::text::bigint) FROM pg_snapshot_xip(snapshot.s) AS x
     WHERE (x::text::bigint & 4294967295) NOT IN (SELECT low32 FROM others)),
    CASE WHEN pg_backend_pid() IN (SELECT pid FROM writers)
         THEN pg_current_xact_id_if_assigned()::text::bigint END
)
FROM snapshot
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
    more than ``idle_seconds`` between two statements. A transaction that had
    an id already (the store called inside the site's own transaction, after
    a write on the pool's database) is said in the log: until now a reader
    could have passed its place, and may never send what it writes.
    """
    cursor.execute(
        f"SELECT pg_advisory_xact_lock_shared(%s), {BOUND_IDLE}, "
        "pg_current_xact_id_if_assigned() IS NOT NULL",
        [LOG_WRITERS, idle(idle_seconds)],
    )
    if cursor.fetchone()[2]:
        logger.warning(
            "The pool was written to inside a transaction that had written to its database "
            "before: a stream or a log reader may miss this message. Write to the pool "
            "outside such a transaction (with transaction.on_commit, say), or give the pool "
            "a database alias of its own."
        )
