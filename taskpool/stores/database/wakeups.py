"""Wake-ups across hosts: ``NOTIFY`` after a commit, ``LISTEN`` while anyone waits.

A notification is only a hint that the log grew: the rows are the truth,
and a waiter looks at them again at least every ``poll_seconds`` whether or
not a hint came (PgBouncer in transaction mode, for one, drops ``LISTEN``).
Writers never notify inside the transaction that holds a decision's locks
(a ``NOTIFY`` takes a cluster-wide lock at commit): a thread of the process
sends one, at most every ``debounce_seconds``, after the commits it was told
of. Both use connections of their own, made from the store's database
alias, outside Django's (which may sit behind a pooler).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

logger = logging.getLogger("taskpool.database")

CHANNEL = "taskpool"


class Wakeups:
    """This process's notifier and listener for one store."""

    #: Seconds between two notifications this process sends, at most one per that.
    debounce_seconds = 0.02

    def __init__(self, connection_params: Callable[[], dict[str, Any]]) -> None:
        self._params = connection_params
        self._to_send = threading.Event()
        self._sender: threading.Thread | None = None
        self._sender_lock = threading.Lock()
        self._listen_lock = threading.Lock()
        self._listener: psycopg.Connection | None = None
        self._closed = False

    # Sending ------------------------------------------------------------------

    def committed(self) -> None:
        """Say that this process committed messages: other processes' waiters look soon."""
        self._to_send.set()
        if self._sender is None:
            with self._sender_lock:
                if self._sender is None and not self._closed:
                    self._sender = threading.Thread(
                        target=self._send_forever, name="taskpool-notify", daemon=True
                    )
                    self._sender.start()

    def _send_forever(self) -> None:
        connection: psycopg.Connection | None = None
        try:
            while not self._closed:
                self._to_send.wait()
                if self._closed:
                    break
                self._to_send.clear()
                try:
                    if connection is None or connection.closed:
                        connection = psycopg.connect(**self._params(), autocommit=True)
                    connection.execute(f"NOTIFY {CHANNEL}")
                except psycopg.Error:
                    logger.warning("taskpool: could not notify other processes; they will poll.")
                    connection = None
                    time.sleep(1.0)
                time.sleep(self.debounce_seconds)
        finally:
            if connection is not None:
                connection.close()

    # Listening ----------------------------------------------------------------

    def wait(self, timeout: float) -> bool:
        """Block until a notification comes (``True``) or ``timeout`` passes (``False``).

        One thread of the process listens at a time; another one calling
        meanwhile just sleeps out its timeout (its caller looks at the rows
        either way).
        """
        if not self._listen_lock.acquire(timeout=max(timeout, 0)):
            return False
        try:
            listener = self._listening()
            if listener is None:
                time.sleep(max(timeout, 0))
                return False
            try:
                for _ in listener.notifies(timeout=max(timeout, 0), stop_after=1):
                    return True
            except psycopg.Error:
                self._drop_listener()
            return False
        finally:
            self._listen_lock.release()

    def _listening(self) -> psycopg.Connection | None:
        if self._listener is None or self._listener.closed:
            try:
                self._listener = psycopg.connect(**self._params(), autocommit=True)
                self._listener.execute(f"LISTEN {CHANNEL}")
            except psycopg.Error:
                logger.warning("taskpool: could not listen for notifications; polling.")
                self._listener = None
        return self._listener

    def _drop_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            finally:
                self._listener = None

    def close(self) -> None:
        """Close both connections (the sender's within ``debounce_seconds``)."""
        self._closed = True
        self._to_send.set()
        with self._listen_lock:
            self._drop_listener()
        sender = self._sender
        if sender is not None and sender is not threading.current_thread():
            sender.join(timeout=2)
