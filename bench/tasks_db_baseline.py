"""The baseline of the decisions' rate: django-tasks-db's enqueue, claim and complete.

django-tasks-db keeps Django's tasks in one table and runs them with its
``db_worker`` command. Each worker process here runs the same cycle in a
loop: enqueue a task that does nothing (an ``INSERT``), then let
django-tasks-db's own ``Worker`` run once: in a transaction it takes the
oldest ready task with ``select_for_update(skip_locked=True)`` and marks it
running, then runs it and marks it successful. One cycle is three
committed transactions, as in a site that enqueues a job per request.

Only importable with the ``bench`` extra installed (django-tasks-db, and
the django-tasks backport it needs on Django 5.2).
"""

from __future__ import annotations

import time

from django_tasks import task

from bench.process_rates import Loop, Rates, run_processes


@task()
def nothing() -> None:
    """The task the baseline enqueues and runs."""


def cycles(workers: int, seconds: float) -> Rates:
    """Enqueue + claim + complete cycles per second from ``workers`` processes."""

    def make_loop(number: int) -> Loop:
        from django_tasks_db.management.commands.db_worker import Worker

        def run_one() -> None:
            Worker(
                queue_names=["default"],
                interval=0,
                batch=False,
                backend_name="default",
                startup_delay=False,
                max_tasks=1,
                worker_id=f"bench-{number}",
                excluded_queue_names=[],
            ).run()

        nothing.enqueue()  # connected
        run_one()

        def loop(deadline: float) -> dict[str, int]:
            count = 0
            while time.perf_counter() < deadline:
                nothing.enqueue()
                run_one()
                count += 1
            return {"cycles": count}

        return loop

    return run_processes(make_loop, workers, seconds)
