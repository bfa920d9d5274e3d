"""A worker process that ends as soon as the process that started it does.

A replay worker reads for seconds on a core of its own. A server killed
meanwhile (SIGKILL from systemd's stop timeout, the OOM killer, a container's
stop) runs no ``finally`` to stop its workers, and they would read on to the
end, taking the CPU the restarted server needs for its own replay.

On Linux the kernel sees to it: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` kills the
worker the moment its parent goes, however it goes, even while the worker is
deep in one long C call (unpickling, a read) and runs no Python. The signal
comes when the parent *thread* that started the worker ends, not the
process: the store's thread waits for its workers in ``communicate`` and
stops them in a ``finally``, so it ends before them only when the whole
process does. A parent that died before the worker asked would never send
it: the worker compares its parent's pid with the one it was given.
Elsewhere a thread of the worker's own looks at its parent's pid every
``POLL_SECONDS`` (an orphan's parent becomes another process).

Not done in ``Popen(preexec_fn=...)``, which is unsafe in a process with
threads (a server has them); not by watching a pipe from the server for its
end, which never comes while a process the server forked meanwhile holds a
copy of it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

#: How often a worker off Linux looks whether its parent is still there.
POLL_SECONDS = 0.1
_PR_SET_PDEATHSIG = 1


def end_with_parent(parent_pid: int) -> None:
    """Make this process end when ``parent_pid``, its parent, ends; now if it already has."""
    if not (sys.platform.startswith("linux") and _ask_the_kernel()):
        threading.Thread(
            target=_watch, args=(parent_pid,), name="parent-watch", daemon=True
        ).start()
    if os.getppid() != parent_pid:
        os._exit(1)


def _ask_the_kernel() -> bool:
    """SIGKILL this process when its parent thread ends (Linux); whether the kernel took it."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):  # no C library to load, or no prctl in it
        return False


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os._exit(1)
