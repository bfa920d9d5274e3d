"""The demo site served as production serves it, for the benchmarks that need a real server."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_uvicorn(
    app: str,
    environment: dict[str, str],
    *,
    workers: int = 1,
    backlog: int = 4096,
    graceful_seconds: int = 2,
    port: int = 0,
) -> tuple[subprocess.Popen, int]:
    """uvicorn serving ``app`` with ``workers`` processes; the process and its port once all serve.

    The port is ``port``, or (0) one the kernel picks, read from uvicorn's log. Not ``--fd``:
    uvicorn takes such a socket for a Unix one and leaves Nagle's algorithm
    on, which adds 40 ms to every answer. The log is read to its end (so its
    pipe never fills), and a traceback or an error in it is shown.
    """
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backlog",
            str(backlog),
            "--no-access-log",
            "--log-level",
            "info",
            "--timeout-graceful-shutdown",
            str(graceful_seconds),
            *(["--workers", str(workers)] if workers > 1 else []),
        ],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), **environment},
        stderr=subprocess.PIPE,
        text=True,
    )
    started: queue.Queue[int] = queue.Queue()
    serving: queue.Queue[bool] = queue.Queue()

    def read_log() -> None:
        for line in process.stderr:
            found = re.search(r"Uvicorn running on http://127.0.0.1:(\d+)", line)
            if found:
                started.put(int(found.group(1)))
            if "Application startup complete" in line:
                serving.put(True)
            if "Traceback" in line or "ERROR" in line:
                print("server:", line.rstrip(), file=sys.stderr)

    threading.Thread(target=read_log, daemon=True).start()
    try:
        port = started.get(timeout=120)
        for _ in range(workers):  # each worker process says so once it serves
            serving.get(timeout=120)
    except queue.Empty:
        process.kill()
        raise RuntimeError(f"uvicorn did not start serving {app}") from None
    return process, port
