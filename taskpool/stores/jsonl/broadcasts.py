"""The open ``device:*`` tasks, and for each device the ones it is done with.

A broadcast is pending for every device until that device answers it for
good, and it stays open for all of them until it expires: a fleet's week
holds thousands, most of them answered by the device asking. Filtering them
one by one on every request made pending cost the number of open
broadcasts. Here each device instead keeps the runs of open broadcasts it is
done with, as spans of positions (``done``): reading its pending ones walks
the open broadcasts in position order and jumps over each span with a
bisection, so it costs about what it returns (each span it jumps over is
followed by one it returns). Each device's count of open broadcasts it is
done with is kept too, so counting its pending ones is a subtraction.

A span may keep positions of broadcasts that closed since, and two spans
may end up with nothing open between them: a span left holding no open
broadcast goes when the last one in it closes, and reading joins the spans
it passes. A position that comes back into the open broadcasts (an any-one
broadcast whose claim was released, a line read out of order) is checked
against every span it falls in.

Only broadcasts that are pending for every device not done with them are
kept here: a claimed any-one broadcast, an aborted job, a rollout (offered
device by device) sit in the devices' own queues instead (``PoolIndex``).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator

from taskpool.lifecycle import TaskState


class OpenBroadcasts:
    """Open broadcasts in position order, and the spans of them each device is done with.

    A device is done with a broadcast when ``TaskState.offered_to`` says no
    for it: it answered for good, or a job's attempt of its waits for a retry.
    Not thread-safe: the store serialises access.
    """

    def __init__(self) -> None:
        #: Positions of the open broadcasts, ascending.
        self.positions: list[int] = []
        #: position -> the broadcast's state.
        self.states: dict[int, TaskState] = {}
        #: device id -> spans of positions it is done with: ``[start, end, start, end, ...]``,
        #: each span half-open, ascending, disjoint and not touching. Arrays of 64-bit
        #: integers: a week's spans over 1,000 devices took 13 MiB as lists, 3 as arrays.
        self.done: dict[str, array[int]] = {}
        #: device id -> how many of the open broadcasts its spans hold.
        self.done_counts: dict[str, int] = {}
        #: The broadcasts with a ``not_before`` (a job's start time) still to come: pending
        #: for no one before it.
        self.scheduled: dict[int, TaskState] = {}
        #: The highest span end ever written: a broadcast added below it may fall in a span.
        self.reach = 0

    def __len__(self) -> int:
        return len(self.positions)

    def holds(self, state: TaskState) -> bool:
        """Whether ``state`` is one of the open broadcasts kept here."""
        return self.states.get(state.position) is state

    # Changes ------------------------------------------------------------

    def add(self, state: TaskState) -> None:
        """Keep ``state`` (a new broadcast, or one coming back), marked done for devices done with it."""
        position = state.position
        positions = self.positions
        if not positions or positions[-1] < position:
            positions.append(position)
        else:
            insort(positions, position)
        self.states[position] = state
        job = state.job
        if job is not None and job.not_before is not None:
            self.scheduled[position] = state
        if position < self.reach:
            # Spans written while this position was not open may hold it.
            counts = self.done_counts
            for device_id, spans in list(self.done.items()):
                if bisect_right(spans, position) & 1:
                    if state.offered_to(device_id):
                        self._split(device_id, spans, position)
                    else:
                        counts[device_id] = counts.get(device_id, 0) + 1
        for device_id in dict.fromkeys([*state.answers, *state.runs]):
            if not state.offered_to(device_id):
                self.mark_done(device_id, position)

    def remove(self, state: TaskState) -> None:
        """Forget a broadcast that closed or went to the devices' own queues."""
        position = state.position
        if self.states.get(position) is not state:
            return
        del self.states[position]
        self.scheduled.pop(position, None)
        positions = self.positions
        at = bisect_left(positions, position)
        del positions[at]
        # Only a device that answered can be done with it: those that are lose it from
        # their count, and the span that held it if it holds no other open broadcast.
        counts = self.done_counts
        for device_id in dict.fromkeys([*state.answers, *state.runs]):
            spans = self.done.get(device_id)
            if not spans:
                continue
            k = bisect_right(spans, position)
            if not k & 1:
                continue
            left = counts[device_id] - 1
            if left:
                counts[device_id] = left
            else:
                del counts[device_id]
            if bisect_left(positions, spans[k]) == bisect_left(positions, spans[k - 1]):
                del spans[k - 1 : k + 1]
                if not spans:
                    del self.done[device_id]

    def mark_done(self, device_id: str, position: int) -> None:
        """The device is done with the open broadcast at ``position``."""
        spans = self.done.get(device_id)
        if spans is None:
            spans = self.done[device_id] = array("q")
        k = bisect_right(spans, position)
        if k & 1:
            return  # inside a span already
        positions = self.positions
        at = bisect_left(positions, position)
        # Join the span before when no open broadcast lies between it and this one,
        # the span after likewise.
        join_before = k > 0 and (at == 0 or positions[at - 1] < spans[k - 1])
        join_after = k < len(spans) and (at + 1 == len(positions) or positions[at + 1] >= spans[k])
        if join_before and join_after:
            del spans[k - 1 : k + 1]
        elif join_before:
            spans[k - 1] = position + 1
        elif join_after:
            spans[k] = position
        else:
            spans[k:k] = array("q", (position, position + 1))
        if spans[-1] > self.reach:
            self.reach = spans[-1]
        self.done_counts[device_id] = self.done_counts.get(device_id, 0) + 1

    def mark_pending(self, device_id: str, position: int) -> None:
        """The open broadcast at ``position`` is pending for the device again (a retry)."""
        spans = self.done.get(device_id)
        if spans and bisect_right(spans, position) & 1:
            self._split(device_id, spans, position)
            left = self.done_counts[device_id] - 1
            if left:
                self.done_counts[device_id] = left
            else:
                del self.done_counts[device_id]

    def _split(self, device_id: str, spans: array[int], position: int) -> None:
        k = bisect_right(spans, position)
        start, end = spans[k - 1], spans[k]
        kept = ([start, position] if start < position else []) + (
            [position + 1, end] if position + 1 < end else []
        )
        spans[k - 1 : k + 1] = array("q", kept)
        if not spans:
            del self.done[device_id]

    def take_later(self, later: OpenBroadcasts) -> None:
        """Take in the broadcasts of an index of the lines after this one's (``PoolIndex.fold``).

        Its positions and spans normally all come after these: they are
        appended, and the counts added. Anything else is merged and counted again.
        """
        interleaved = False
        for position in later.positions:
            state = later.states[position]
            if position < self.reach:
                interleaved = True
                self.add(state)  # checks the spans here, then marks what the state says
                continue
            if not self.positions or self.positions[-1] < position:
                self.positions.append(position)
            else:
                insort(self.positions, position)
            self.states[position] = state
            if position in later.scheduled:
                self.scheduled[position] = state
        for device_id, spans in later.done.items():
            mine = self.done.get(device_id)
            if not mine:
                self.done[device_id] = spans
            elif spans[0] > mine[-1]:
                mine.extend(spans)
            elif spans[0] == mine[-1]:  # the two spans touch: one span
                del mine[-1]
                mine.extend(spans[1:])
            else:
                interleaved = True
                pairs = sorted(
                    [
                        *zip(mine[::2], mine[1::2], strict=True),
                        *zip(spans[::2], spans[1::2], strict=True),
                    ]
                )
                merged: list[int] = []
                for start, end in pairs:
                    if merged and start <= merged[-1]:
                        merged[-1] = max(merged[-1], end)
                    else:
                        merged += [start, end]
                self.done[device_id] = array("q", merged)
        self.reach = max(self.reach, later.reach)
        if interleaved:
            self.done_counts = {
                device_id: count
                for device_id, spans in self.done.items()
                if (count := self._held(spans))
            }
        else:
            for device_id, count in later.done_counts.items():
                self.done_counts[device_id] = self.done_counts.get(device_id, 0) + count

    def _held(self, spans: array[int]) -> int:
        """How many open broadcasts ``spans`` hold."""
        positions = self.positions
        return sum(
            bisect_left(positions, spans[k + 1]) - bisect_left(positions, spans[k])
            for k in range(0, len(spans), 2)
        )

    # Reading ------------------------------------------------------------

    def is_done(self, device_id: str, position: int) -> bool:
        """Whether the device is done with the open broadcast at ``position``."""
        spans = self.done.get(device_id)
        return spans is not None and bisect_right(spans, position) % 2 == 1

    def pending_for(self, device_id: str) -> Iterator[TaskState]:
        """The open broadcasts the device is not done with, in position order.

        Whether each is pending at this moment (expired, not started yet) is
        the caller's to check. Spans passed over that hold no open broadcast
        are dropped, and spans with none between them joined, as it goes.
        """
        positions = self.positions
        states = self.states
        spans = self.done.get(device_id)
        if not spans:
            for position in positions:
                yield states[position]
            return
        count = len(positions)
        at = 0  # the next open broadcast to look at
        k = 0  # the next span that may hold it
        while at < count:
            position = positions[at]
            while k < len(spans) and spans[k + 1] <= position:
                del spans[k : k + 2]  # wholly before an open broadcast not in it: nothing open
            if k < len(spans) and spans[k] <= position:
                at = bisect_left(positions, spans[k + 1], at)
                # The next span starts at or before the next open broadcast: join them.
                while k + 2 < len(spans) and at < count and spans[k + 2] <= positions[at]:
                    spans[k + 1] = spans[k + 3]
                    del spans[k + 2 : k + 4]
                    at = bisect_left(positions, spans[k + 1], at)
                if at == count:
                    del spans[k + 2 :]  # past the last open broadcast: nothing open in them
                k += 2
                continue
            yield states[position]
            at += 1

    def count_for(self, device_id: str, now: float) -> int:
        """How many open broadcasts are pending for the device at ``now``."""
        total = len(self.positions) - self.done_counts.get(device_id, 0)
        started = []
        for position, state in self.scheduled.items():
            if now >= state.job.not_before:  # type: ignore[union-attr,operator]
                started.append(position)  # pending for all from now on: no need to look again
            elif not self.is_done(device_id, position):
                total -= 1
        for position in started:
            del self.scheduled[position]
        return total
