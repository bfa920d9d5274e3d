"""A separate writer process for the concurrency tests: ``python -m tests.pool_writer ...``.

It builds its own ``JsonlStore`` on the pool directory, waits for a line on
stdin (so that every writer starts at once), then writes and prints one line
of outcome per message.

    tasks DATA_DIR WRITER COUNT    post COUNT tasks to device:*, bodies of varied sizes
    answer DATA_DIR DEVICE TASK_ID answer the task ``done`` once: prints ok or refused
"""

from __future__ import annotations

import sys

from taskpool.exceptions import PoolError
from taskpool.stores.jsonl import JsonlStore

#: Body sizes the writers cycle through: several well over 4 KiB (PIPE_BUF, a page).
BODY_SIZES = (10, 5_000, 300, 20_000, 4_097, 60_000, 1_000)


def body_for(writer: str, number: int) -> str:
    """A body that says who wrote it, so a line mixed with another's is caught."""
    size = BODY_SIZES[number % len(BODY_SIZES)]
    unit = f"<{writer}:{number}>"
    return (unit * (size // len(unit) + 1))[:size]


def main(argv: list[str]) -> None:
    mode, data_dir, who, what = argv[:4]
    store = JsonlStore(data_dir, fsync=True)
    sys.stdin.readline()  # the go signal
    if mode == "tasks":
        for number in range(int(what)):
            posted = store.post_task(
                sender="backend", to="device:*", title=f"{who}:{number}", body=body_for(who, number)
            )
            print(posted.message["id"], flush=True)
    elif mode == "answer":
        try:
            store.post_response(device_id=who, parent_id=what, status="done")
        except PoolError as error:
            print(f"refused {type(error).__name__}", flush=True)
        else:
            print("ok", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
