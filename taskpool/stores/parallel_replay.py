"""A first start with no checkpoint: the day files replayed in parallel processes.

Replaying a week costs about 8 us of Python per line, on one core. When a
store finds no checkpoint and the horizon is large, each day file is read by
a worker process into an index of its own, as if it were the only file, and
the store folds the indexes together in day order (``PoolIndex.fold``).

A worker cannot know the tasks of other days, so it hands back the answers
whose task its day did not have (``DayReading.strays``); the fold applies
them to the tasks still open from the days before, as reading the files in
order would have. A task line repeated from an earlier day is the one thing
a fold cannot put right; the store then replays the files in order.

Workers are new interpreters, not forks: the server may have threads.
Anything that goes wrong in them is only a missed shortcut, and the store
replays the files itself.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from taskpool.exceptions import InvalidMessage
from taskpool.messages import Message, decode_line
from taskpool.stores.day_reading import whole_line_runs
from taskpool.stores.index import PoolIndex

#: Below this many bytes in the horizon, starting workers costs more than it saves.
MIN_BYTES = 32 * 1024 * 1024
#: A worker that has not answered by then is stopped, and the files are read in order.
WORKER_TIMEOUT_SECONDS = 600
READ_CHUNK_BYTES = 8 * 1024 * 1024


@dataclass
class DayReading:
    """One day file read on its own."""

    day: date
    inode: int
    end: int  # just past the last complete line read
    size: int
    index: PoolIndex
    #: Answers (and their offsets) to tasks this day file does not hold, in file order.
    strays: list[tuple[Message, int]]


def worth_it(paths: list[Path]) -> bool:
    """Whether replaying these files in parallel should beat reading them in order."""
    if len(paths) < 2 or available_cpus() < 2 or not _runs_python():
        return False
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            return False
    return total >= MIN_BYTES


def available_cpus() -> int:
    """The CPUs this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _runs_python() -> bool:
    """Whether ``sys.executable`` is a Python that takes ``-m`` (not uWSGI, not a frozen app)."""
    name = Path(sys.executable or "").name
    return not getattr(sys, "frozen", False) and name.startswith(("python", "pypy"))


def read_days(days: list[tuple[date, Path]], task_ttl: float, now: float) -> list[DayReading]:
    """Each day file read in a worker process, in day order. Raises if any worker fails.

    One worker per CPU, each given about as many bytes to read. A worker is
    ``python -m taskpool.stores.parallel_replay`` with the same interpreter,
    and answers with a pickle on its stdout: it depends on nothing of the
    server's process (not even its ``__main__``).
    """
    lanes: list[list[tuple[date, Path]]] = [[] for _ in range(min(len(days), available_cpus()))]
    loads = [0] * len(lanes)
    for day, path in sorted(days, key=lambda item: item[1].stat().st_size, reverse=True):
        lane = loads.index(min(loads))
        lanes[lane].append((day, path))
        loads[lane] += path.stat().st_size
    # The workers import taskpool from where this process did.
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    processes = []
    try:
        for lane_days in lanes:
            command = [sys.executable, "-m", __name__, repr(task_ttl), repr(now)]
            for day, path in lane_days:
                command += [day.isoformat(), str(path)]
            processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, env=environment))
        readings: dict[date, DayReading] = {}
        for process in processes:
            output, _ = process.communicate(timeout=WORKER_TIMEOUT_SECONDS)
            if process.returncode != 0:
                raise RuntimeError(f"a replay worker failed with exit code {process.returncode}")
            readings.update((reading.day, reading) for reading in pickle.loads(output))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [readings[day] for day, _path in days]


def read_day(day: date, path: str, task_ttl: float, now: float) -> DayReading:
    """Read one day file into an index of its own (in a worker process)."""
    index = PoolIndex(task_ttl)
    strays: list[tuple[Message, int]] = []
    day_ordinal = day.toordinal()
    with open(path, "rb", buffering=0) as file:
        stat = os.fstat(file.fileno())
        end = 0
        for offset, run in whole_line_runs(file.fileno(), 0, stat.st_size, READ_CHUNK_BYTES):
            start = offset
            for line in run.split(b"\n"):
                if line:
                    try:
                        message = decode_line(line)
                    except InvalidMessage:
                        index.skip_line()
                    else:
                        parent_id = message["parent_id"]
                        if (
                            message["type"] == "response"
                            and parent_id is not None
                            and not index.knows(parent_id)
                        ):
                            strays.append((message, start))
                        index.add(message, day_ordinal, start, now)
                start += len(line) + 1
            end = start
    return DayReading(day, stat.st_ino, end, stat.st_size, index, strays)


def main(arguments: list[str]) -> None:
    """A worker: read the day files named, write their ``DayReading`` list pickled to stdout.

    Arguments: ``TASK_TTL`` seconds, now, then a day and its file's path for each file.
    """
    task_ttl, now = float(arguments[0]), float(arguments[1])
    pairs = zip(arguments[2::2], arguments[3::2], strict=True)
    readings = [read_day(date.fromisoformat(day), path, task_ttl, now) for day, path in pairs]
    sys.stdout.buffer.write(pickle.dumps(readings, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    # Through the module's own name, so the pickle names its classes as the store knows them.
    from taskpool.stores import parallel_replay

    parallel_replay.main(sys.argv[1:])
