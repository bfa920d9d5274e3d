"""The pool's Prometheus metrics, and their exposition for ``GET /pool/metrics``.

Counters and histograms are kept per process by ``prometheus_client``. With
``PROMETHEUS_MULTIPROC_DIR`` set in the environment of every server process
(before it starts: ``prometheus_client`` reads it at import), each process
writes its values to files there and a scrape answered by any one of them
adds up every process's: several uvicorn workers read as one server. The
directory must be emptied before the server starts (the values of processes
that ended are kept otherwise).

Figures about the pool itself (tasks pending, devices online, the index's
lag, the checkpoint's age, free disk) are not counted: they are read from
the store when the metrics are scraped, by the process that answers.

In that mode a process's first value makes its files, named by its pid, and
they stay after it ends. Every process that sets Django up imports this
module, a management command from cron as much as a worker, so importing it
makes no value; and a command records nothing (``not_recorded``): no scrape
reads a process that ends in seconds, and a cron job that inherits the
variable would leave files there at every run.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "count_request", "exposition", "measured_write", "waiting"]

#: Seconds: from a heartbeat without a sync to a decision over a busy pool with one.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "taskpool_requests",
    "Requests answered by the pool's endpoints, by endpoint, method and status code.",
    ["endpoint", "method", "status"],
    registry=None,
)
APPEND_SECONDS = Histogram(
    "taskpool_append_seconds",
    "Time to store one message: the decision under the pool's lock, the write and its sync.",
    ["type"],
    buckets=_LATENCY_BUCKETS,
    registry=None,
)


@functools.cache
def decision_seconds() -> Histogram:
    """Made at its first use: a histogram without labels makes its value (its file) when made."""
    return Histogram(
        "taskpool_decision_seconds",
        "Time the rules take to decide a write (a 409, a claim), while the pool's lock is held.",
        buckets=_LATENCY_BUCKETS,
        registry=None,
    )


APPENDED = Counter(
    "taskpool_messages_appended",
    "Messages stored through the API and the admin, by type.",
    ["type"],
    registry=None,
)
WAITING = Gauge(
    "taskpool_waiting_requests",
    "Requests waiting for the pool now: long-polls and event streams.",
    ["kind"],
    multiprocess_mode="livesum",
    registry=None,
)

#: What ``waiting`` counts. Both are shown from the first scrape, at 0, so that a
#: dashboard's query has a series before the first request waits.
WAITING_KINDS = ("long_poll", "stream")


def _own_metrics() -> tuple[Collector, ...]:
    return (REQUESTS, APPEND_SECONDS, decision_seconds(), APPENDED, WAITING)


#: False while a management command runs (see the module's docstring).
_recording: ContextVar[bool] = ContextVar("taskpool_metrics_recording", default=True)


@contextmanager
def not_recorded() -> Iterator[None]:
    """Record no write made in this block (a management command's)."""
    token = _recording.set(False)
    try:
        yield
    finally:
        _recording.reset(token)


_children: dict[Any, dict[tuple[str, ...], Any]] = {}


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, kept: ``labels()`` takes a lock and builds its key each call.

    The same object ``labels()`` returns (it keeps its children too), so
    values kept per process, in files for several workers, are unchanged.
    """
    children = _children.setdefault(metric, {})
    child = children.get(labels)
    if child is None:
        child = children[labels] = metric.labels(*labels)
    return child


def count_request(endpoint: str, method: str, status: int) -> None:
    """One answered request of ``endpoint`` (a URL name: never a path, so labels stay few)."""
    _child(REQUESTS, endpoint, method, str(status)).inc()


@contextmanager
def waiting(kind: str) -> Iterator[None]:
    """Count a waiting request (``long_poll`` or ``stream``) while the block runs."""
    gauge = _child(WAITING, kind)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def measured_write(
    transact: Callable[..., Any],
    decide: Callable[..., Any],
    *,
    reads_pool: bool,
    idle_checks_count: bool = True,
) -> Any:
    """``transact(decide)``, timing the decision and the whole write, counting what it stored.

    A write that does not read the pool (a heartbeat) decides nothing: its
    rules only make its message, so it is not counted among the decisions.
    Without ``idle_checks_count`` (the job ticker's look at each open job, every
    second), a decision counts only when it writes: else the ticker's checks would
    be most of the figure, and a slow answer would hardly move it.
    """
    if not _recording.get():
        return transact(decide, reads_pool=reads_pool)
    stored: list[str] = []

    def noted(ledger: Any, now: float) -> Any:
        started = time.perf_counter()
        message = None
        try:
            message, result = decide(ledger, now)
        finally:
            if reads_pool and (idle_checks_count or message is not None):
                decision_seconds().observe(time.perf_counter() - started)
        stored[:] = [] if message is None else [message["type"]]
        return message, result

    started = time.perf_counter()
    result = transact(noted, reads_pool=reads_pool)
    if stored:
        _child(APPEND_SECONDS, stored[0]).observe(time.perf_counter() - started)
        _child(APPENDED, stored[0]).inc()
    return result


class PoolCollector(Collector):
    """The pool's figures, read from the store (and the devices) at each scrape.

    A store or a database that cannot be read now leaves them out of the scrape, and
    the counters, which live in the process, are served all the same: an outage is
    when the error rates matter most.
    """

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from django.db import DatabaseError

        from taskpool.exceptions import StoreUnavailable

        try:
            gauges = self._gauges()
        except (DatabaseError, StoreUnavailable) as error:
            logging.getLogger("taskpool").warning(
                "taskpool: the pool's figures were left out of the metrics: %s", error
            )
            return
        yield from gauges

    def _gauges(self) -> list[GaugeMetricFamily]:
        from taskpool.fleet import online_device_ids
        from taskpool.models import DeviceUser
        from taskpool.stores import get_store

        figures = get_store().figures()
        devices = list(DeviceUser.objects.all())
        gauges = [
            _gauge(
                "taskpool_tasks_pending",
                "Tasks still open: not yet closed for every device (answered for good, "
                "cancelled or expired); a job's task waiting for its start, a rollout step or "
                "a retry counts.",
                figures.open_tasks,
            ),
            _gauge("taskpool_devices", "Registered devices.", len(devices)),
            _gauge(
                "taskpool_devices_online",
                "Devices heard from within ONLINE_WINDOW.",
                len(online_device_ids(devices)),
            ),
        ]
        optional = [
            (
                "taskpool_index_lag_bytes",
                "Bytes of the day files the answering process's index had not read yet.",
                figures.index_lag_bytes,
            ),
            (
                "taskpool_checkpoint_age_seconds",
                "Seconds since the index's start-up checkpoint was written.",
                figures.checkpoint_age_seconds,
            ),
            (
                "taskpool_data_dir_free_bytes",
                "Free bytes on the filesystem of DATA_DIR.",
                figures.disk_free_bytes,
            ),
        ]
        gauges += [_gauge(name, text, value) for name, text, value in optional if value is not None]
        return gauges


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _forget_ended_workers(directory: str) -> None:
    """Leave the waiting requests of worker processes that have ended out of the sums.

    A worker killed while requests waited (a crash, the OOM killer) never
    counts them down, and the server starts another in its place: its file
    would add them to ``taskpool_waiting_requests`` until the next start.
    Its counters stay, so that totals never go back.
    """
    from prometheus_client import multiprocess

    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and not _running(int(pid)):
            multiprocess.mark_process_dead(int(pid), directory)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def exposition() -> bytes:
    """The metrics in Prometheus's text format: every process's counters, and the pool's figures."""
    for kind in WAITING_KINDS:  # at 0 until a request waits
        _child(WAITING, kind)
    decision_seconds()  # empty until a write, as it was when made at import
    registry = CollectorRegistry()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        _forget_ended_workers(directory)
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        for metric in _own_metrics():
            registry.register(metric)
    registry.register(PoolCollector())
    return generate_latest(registry)
