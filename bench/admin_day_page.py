"""How long the admin takes on a day of a million lines (the target: it opens in under a second).

    python -m bench.admin_day_page [--lines 1000000]

Builds a day file of N lines (tasks, responses, heartbeats from 500 devices)
in a temporary pool, serves the demo site's admin through Django's test
client, and times: the day page's first, middle and last page; a filtered
page (a type that is rare, and one that is absent); a message's page; the
day-file list while it counts the file (64 MiB a view), once counted
(cached), and after an append (counting only the new bytes); a device's
recent messages. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_day(path: Path, lines: int) -> None:
    from taskpool.messages import encode_line, new_message_id

    day = path.name[:10]
    out = []
    task_id = new_message_id()
    for number in range(lines):
        second = number * 86399 // lines
        ts = f"{day}T{second // 3600:02d}:{second % 3600 // 60:02d}:{second % 60:02d}Z"
        device = f"device:pi-{number % 500}"
        if number % 10 == 0:
            task_id = new_message_id()
            message = {
                "id": task_id,
                "ts": ts,
                "from": "user:ops@example.com",
                "to": device,
                "type": "task",
                "title": f"job {number}",
                "body": "run it",
                "parent_id": None,
                "meta": {"expires_at": f"{day}T23:59:59Z"},
            }
        elif number % 10 < 4:
            message = {
                "id": new_message_id(),
                "ts": ts,
                "from": device,
                "to": "user:ops@example.com",
                "type": "response",
                "title": "",
                "body": "ok",
                "parent_id": task_id,
                "meta": {"status": "done" if number % 10 == 3 else "progress"},
            }
        else:
            kind = "error" if number == lines // 2 else "heartbeat"
            message = {
                "id": new_message_id(),
                "ts": ts,
                "from": device,
                "to": "backend",
                "type": kind,
                "title": "",
                "body": "",
                "parent_id": None,
                "meta": {"load": 0.5},
            }
        out.append(encode_line(message))
        if len(out) >= 100_000:
            with open(path, "ab") as file:
                file.write(b"".join(out))
            out.clear()
    with open(path, "ab") as file:
        file.write(b"".join(out))


def timed(label: str, action, repeat: int = 5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - start)
    print(
        f"{label:<58} median {statistics.median(times) * 1000:8.1f} ms   max {max(times) * 1000:8.1f} ms"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    options = parser.parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="taskpool-bench-admin-"))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        TASKPOOL_VAR_DIR=str(var_dir),
        DJANGO_SECRET_KEY="bench-only-not-a-secret-0123456789abcdef",
        DJANGO_ALLOWED_HOSTS="testserver",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    from taskpool.days import day_of
    from taskpool.stores import get_store

    setup_test_environment()  # so responses carry their template context
    call_command("migrate", verbosity=0)
    store = get_store()
    day = day_of(store.now()).isoformat()
    pool = var_dir / "pool"
    pool.mkdir(exist_ok=True)
    path = pool / f"{day}.jsonl"
    start = time.perf_counter()
    build_day(path, options.lines)
    size = path.stat().st_size
    print(
        f"built {path.name}: {options.lines} lines, {size / 1e6:.0f} MB in {time.perf_counter() - start:.1f} s"
    )

    client = Client()
    client.force_login(get_user_model().objects.create_superuser("bench", password="x"))
    base = f"/admin/taskpool/dayfile/{day}/"

    def get(url: str):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        return response

    first = timed("day page, first page (GET)", lambda: get(base))
    middle = f"{day.replace('-', '')}-{_line_start_near(path, size // 2):012d}"
    timed("day page, a page from the middle (after=cursor)", lambda: get(f"{base}?after={middle}"))
    timed("day page, last page (last=1)", lambda: get(f"{base}?last=1"))
    timed("day page, type=task (1 line in 10)", lambda: get(f"{base}?type=task"))
    timed("day page, from=device:pi-7 (1 line in 500)", lambda: get(f"{base}?from=device:pi-7"))
    timed(
        "day page, type=error (1 line, mid-day; stops at scan limit)",
        lambda: get(f"{base}?type=error"),
    )
    timed("day page, q=job 999990 (text, near the end)", lambda: get(f"{base}?q=job+999990"))
    message_url = first.context["rows"][0].message_url
    timed("message page", lambda: get(message_url))
    views = 0
    while True:
        views += 1
        listing = timed(
            f"day list, view {views} (counts up to 64 MiB more)",
            lambda: get("/admin/taskpool/dayfile/"),
            repeat=1,
        )
        if not listing.context["counting"]:
            break
    timed("day list, counted (cached counts)", lambda: get("/admin/taskpool/dayfile/"))
    store.post_heartbeat(device_id="pi-1")
    timed(
        "day list after an append (counts the new bytes)",
        lambda: get("/admin/taskpool/dayfile/"),
        repeat=1,
    )
    timed(
        "device page data: store.device_messages('pi-7', 20)",
        lambda: store.device_messages("pi-7", limit=20),
    )
    timed(
        "device page data: store.device_messages('absent', 20)",
        lambda: store.device_messages("absent", limit=20),
        repeat=1,
    )


def _line_start_near(path: Path, offset: int) -> int:
    with open(path, "rb") as file:
        file.seek(offset)
        file.readline()
        return file.tell()


if __name__ == "__main__":
    main()
