"""The main loop: wait for pending tasks, run each one's handler, answer; heartbeat meanwhile.

One task at a time, oldest first, as the server lists them. While a handler
runs the agent follows the device's event stream, where a cancel of its task
shows at once, and, as a backstop for what the stream may miss (a cancel
before it opened, a dropped connection, an expiry), checks every
``check_interval`` seconds that its task is still pending for the device. A
task cancelled (or expired, or whose attempt ended) is no longer: its handler
is stopped and never answered.

On SIGTERM the agent stops a running handler (its process group), answers the
task ``failed`` with the reason, and exits; if the answer cannot be sent then,
the journal keeps it for the next start.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskpool_agent import __version__
from taskpool_agent.client import Backoff, PoolClient, Refused, Stopped, Unreachable, interruptible
from taskpool_agent.clock import Start
from taskpool_agent.config import Config, ConfigError
from taskpool_agent.journal import (
    ANSWERED,
    FINISHED,
    STARTED,
    Journal,
    attempt_key,
    hold_config,
)
from taskpool_agent.renewal import CHECK_INTERVAL_SECONDS, a_renewal, save_token, wants_renewal
from taskpool_agent.runner import (
    HandlerProcess,
    NoHandler,
    Outcome,
    Progress,
    find_handler,
    find_wrapper,
    keep_output_tail,
    outcome_of,
    still_running,
    timed_by_server,
    timeout_of,
)

log = logging.getLogger("taskpool_agent")

#: Exit status for a token the server no longer takes: a new one is needed (sysexits' EX_CONFIG).
EX_CONFIG = 78
PENDING_LIMIT = 1000
PROGRESS_TEXT_MAX = 1024
#: How long past a job's timeout the agent waits for the server's ``timed_out`` line (on
#: the stream, or seen by the pending check) before it stops the handler itself.
SERVER_TIMEOUT_GRACE_SECONDS = 5.0
#: How often the journal lets go of old answered entries (at start, then while it runs:
#: an agent runs for months, and each entry keeps up to 64 KiB of output on the device).
FORGET_INTERVAL_SECONDS = 3600.0


@dataclass
class Options:
    handlers: Path
    state_dir: Path
    wait: float = 30.0  # seconds a long-poll waits
    heartbeat_interval: float = 30.0
    check_interval: float = 5.0  # how often a running task is checked for cancellation
    handler_timeout: float = 3600.0  # when the task says no meta.timeout
    kill_grace: float = 2.0  # SIGTERM, then SIGKILL after this
    progress_interval: float = 1.0  # at most one progress answer per this many seconds
    stream: bool = True  # follow the event stream while a handler runs (cancels at once)
    backoff: Backoff | None = None
    #: The config file a renewed token is saved in; ``None``: the token is never renewed.
    config_path: Path | None = None
    token_check_interval: float = CHECK_INTERVAL_SECONDS  # how often its age is looked at


class NotThePool(Exception):
    """The server answers 404 for the pool's endpoints: ``server`` names something else."""


class TokenRevoked(Exception):
    """The server answers 401: the device's token is revoked or expired."""

    @classmethod
    def of(cls, error: Refused) -> TokenRevoked:
        return cls(f"The server refuses the device's token ({error.detail})")


class Agent:
    def __init__(self, config: Config, options: Options, stop: threading.Event | None = None):
        self.config = config
        self.options = options
        self.stop = stop or threading.Event()
        self.client = PoolClient(
            config.base_url, config.token, options.backoff or Backoff(), self.stop
        )
        self.journal = Journal(options.state_dir)
        self.journal.hold()
        self._config_lock = (
            None if options.config_path is None else hold_config(options.config_path)
        )
        self.started = time.monotonic()
        self.running: str | None = None
        #: Set when a call made beside the main loop (a heartbeat, a progress answer) gets
        #: a 401; ``refusal`` is what the server said.
        self.token_refused = threading.Event()
        self.refusal: Refused | None = None
        #: Any-one tasks another device held when this one tried, and when it tried.
        self.held_elsewhere: dict[str, float] = {}
        #: Set when an answer waits in the journal for the device to be validated again.
        self.answers_waiting = False
        #: Why the journal cannot be written (a full or read-only state directory), while
        #: it cannot: no task is started meanwhile.
        self.journal_error: str | None = None
        #: When (monotonic) the journal last let go of its old entries, which waits for
        #: the pending list (an entry of a task still pending is kept).
        self.forgot_old_at: float | None = None

    # The loop -------------------------------------------------------------------

    def run(self) -> int:
        """Serve until ``stop`` is set; the process's exit status."""
        log.info(
            "taskpool-agent %s for %s at %s", __version__, self.config.device_id, self.config.server
        )
        if not self.options.handlers.is_dir():
            log.warning("no handlers directory %s: every task is rejected", self.options.handlers)
        threading.Thread(target=self._heartbeats, name="taskpool-heartbeat", daemon=True).start()
        if self.options.config_path is not None:
            threading.Thread(target=self._renewals, name="taskpool-renewal", daemon=True).start()
        try:
            with contextlib.suppress(Stopped):
                self.recover()
                while not self.stop.is_set():
                    self.serve_once()
            if self.refusal is not None:  # a heartbeat's 401 stopped it
                raise TokenRevoked.of(self.refusal)
        except TokenRevoked as error:
            log.error(
                "%s: put a new token in the config file (staff issue one with manage.py "
                "taskpool_device %s --token), or have staff delete the device and enroll again.",
                error,
                self.config.device_id,
            )
            self.stop.set()
            return EX_CONFIG
        except NotThePool as error:
            log.error("%s", error)
            self.stop.set()
            return EX_CONFIG
        log.info("stopped")
        return 0

    def serve_once(self) -> None:
        tasks = self.pending(wait=self.options.wait)
        last = self.forgot_old_at
        if last is None or time.monotonic() - last >= FORGET_INTERVAL_SECONDS:
            self.forgot_old_at = time.monotonic()
            self.journal.forget_old(keep={attempt_key(task) for task in tasks})
        if self.answers_waiting:  # the device may poll again: its kept answers go first
            self.send_waiting_answers()
        now = time.monotonic()
        cooling = self.options.check_interval  # a claim lost this recently waits to be retried
        self.held_elsewhere = {
            key: lost for key, lost in self.held_elsewhere.items() if now - lost < cooling
        }
        runnable = [
            task
            for task in tasks
            if self.journal.read(attempt_key(task)) is None
            and attempt_key(task) not in self.held_elsewhere
        ]
        if runnable and self.journal_error is not None:
            self.stop.wait(self.options.check_interval)  # then try to journal its start again
        if runnable:
            self.take(runnable[0])
        elif any(attempt_key(task) in self.held_elsewhere for task in tasks):
            self.stop.wait(self.options.check_interval)  # then try the claim again
        elif tasks:
            # Only tasks this agent has answered already (the server refused the answer):
            # the long-poll would answer at once. Wait for news on the stream instead.
            self.wait_for_news()

    def wait_for_news(self) -> None:
        """Until the device's stream carries something for it (a new task, a cancel), or
        ``wait`` seconds; ``check_interval`` seconds without the stream, or when it fails.

        Once the stream is open, pending is asked once more: a task posted between the
        last poll and the stream's start is not waited past.
        """
        if not self.options.stream:
            self.stop.wait(self.options.check_interval)
            return
        deadline = time.monotonic() + self.options.wait

        def follow() -> bool:
            """Whether there is news (or time is up); ``False`` for a stream that ended."""
            opened = False
            for name, _data in self.client.events("stream"):
                if name:
                    return True  # an event: the pending list may have changed
                if not opened:
                    opened = True
                    known = self.journal.read
                    if any(known(attempt_key(task)) is None for task in self.pending()):
                        return True
                if time.monotonic() >= deadline:
                    return True
            return False

        try:
            if interruptible(follow, self.stop):
                return
        except (OSError, ValueError, http.client.HTTPException, Refused, Unreachable) as error:
            log.debug("stream: %s", error)
        self.stop.wait(self.options.check_interval)  # no stream to wait on: poll, slowly

    def pending(self, *, wait: float | None = None) -> list[dict[str, Any]]:
        path = f"pending?limit={PENDING_LIMIT}" + (f"&wait={wait:g}" if wait else "")
        timeout = (wait or 0) + 30
        while True:
            try:
                # A 404 page (not the pool's JSON) is asked again, the log saying the
                # config's server may not be the pool's URL: it may also be a proxy's
                # while the site is down for work, which a stop here would outlast.
                answer = interruptible(
                    lambda: self.client.call("GET", path, timeout=timeout, expect=a_list),
                    self.stop,
                )
            except Refused as error:
                if error.status == 401:
                    raise TokenRevoked.of(error) from None
                if error.status == 404:  # in JSON: another API's (the pool has pending)
                    raise NotThePool(
                        f"{self.config.base_url}pending is not found (404): the config's server "
                        "must be the pool's URL, such as https://host/pool/."
                    ) from None
                log.error(
                    "GET pending refused (%s); again in %.0f s", error, self.client.backoff.most
                )
            else:
                return answer.data  # a list: ``expect`` retried anything else
            if self.stop.wait(self.client.backoff.most):
                raise Stopped from None

    # One task -------------------------------------------------------------------------

    def take(self, task: dict[str, Any]) -> None:
        key = attempt_key(task)
        if (task.get("meta") or {}).get("mode") == "any":
            # A claim whose start could not be journaled would hold the task from the other
            # devices, and not run it.
            error = self.journal.has_room()
            if error is not None:
                self.journal_failed(error)
                return
            if not self.claim(key, task):
                return
        self.run_handler(key, task)

    def run_handler(self, key: str, task: dict[str, Any]) -> None:
        """Start the task's handler, journaled first so that it never runs twice, and watch it."""
        if self.stop.is_set():
            # Asked to stop since the task came (an any-one task's claim may answer after
            # SIGTERM): it would be stopped at once and answered failed. The next start
            # takes it.
            raise Stopped
        try:
            path, args = find_handler(self.options.handlers, task)
        except NoHandler as error:
            self.reject(key, task, error)
            return
        start = Start.now()
        entry = {"state": STARTED, "task": task, **start.as_entry(), "handler": str(path)}
        if not self.record(key, entry):  # before the handler starts: it never runs twice
            return
        try:
            process = HandlerProcess.start(self.journal.directory(key), path, args, task)
        except NoHandler as error:  # it cannot be started, now or ever: answered once
            self.reject(key, task, error)
            return
        except OSError as error:  # its files not written, or no process made: it did not run
            log.error("%s: the handler could not be started (%s); tried again", key, error)
            self.journal.forget(key)  # to be started at the next try
            self.stop.wait(self.options.check_interval)
            return
        self.record(key, {**entry, "pid": process.pid, "pid_started": process.started})
        log.info("%s: started %s (pid %d)", key, path.name, process.pid)
        self.watch(key, task, process, start)

    def reject(self, key: str, task: dict[str, Any], error: NoHandler) -> None:
        """Answer ``rejected`` a task whose handler cannot be run, saying why."""
        log.info("%s: %s", key, error)
        outcome = Outcome("rejected", error.title, str(error), {"reason": str(error)})
        self.record(key, {"state": FINISHED, "task": task, "answer": outcome.as_dict()})
        self.answer(key, task, outcome)

    def claim(self, key: str, task: dict[str, Any]) -> bool:
        """Take an any-one task before running it; ``False`` when another device holds it.

        Held elsewhere (409), the task is not journaled: it leaves this device's
        pending list while held, and comes back to be claimed again if its holder
        rejects it or times out. Nor is it when the device itself is refused (a 403
        while it may not poll: staff invalidated it): once validated again, the task
        is pending for it and claimed then. Any other refusal is final.
        """
        try:
            self.client.call(
                "POST",
                "claim",
                {"parent_id": task["id"]},
                idempotency_key=f"{key}.claim",
                about=key,
                expect=lambda data: isinstance(data, dict) and a_message(data.get("claim")),
            )
            return True
        except Refused as error:
            log.info("%s: not claimed (%s)", key, error)
            if error.status == 401:
                raise TokenRevoked.of(error) from None
            if error.status == 409:
                self.held_elsewhere[key] = time.monotonic()
            elif error.status == 403 and not self._may_poll():
                log.warning(
                    "%s: not claimed while the device is refused; claimed once it is "
                    "validated again",
                    key,
                )
            else:
                self.record(key, {"state": ANSWERED, "task": task, "refused": str(error)})
            return False

    def watch(
        self,
        key: str,
        task: dict[str, Any],
        process: HandlerProcess,
        start: Start,
        *,
        adopted: bool = False,
    ) -> None:
        """Wait for the handler's end, reporting its progress, minding timeout, cancel and stop.

        ``adopted``: a handler an earlier agent started, which the server was told of then.
        """
        self.running = key
        timeout = timeout_of(task, self.options.handler_timeout)
        asked = (task.get("meta") or {}).get("handler_timeout")
        if asked is not None and timeout != asked and not adopted:
            log.warning(
                "task %s: meta.handler_timeout %r is not a number of seconds above 0: "
                "the handler has %g s",
                task.get("id"),
                asked,
                timeout,
            )
        by_server = timed_by_server(task)
        # A job's timeout is the server's to call (``timed_out``, which its retries and abort
        # count): the agent stops the handler itself only if that line is late in coming.
        grace = SERVER_TIMEOUT_GRACE_SECONDS if by_server else 0.0
        # Counted from the handler's start (by an earlier agent, for one adopted), on the
        # monotonic clock: a step of the wall clock neither ends it at once nor never.
        deadline = time.monotonic() + timeout + grace - start.elapsed()
        closed = threading.Event()  # the task is no longer this device's to answer
        reporter = ProgressReporter(self, key, task, closed)
        if (by_server or "abort" in (task.get("meta") or {})) and not adopted:
            # The server counts the attempt's time from its first progress answer; and a
            # job's abort cancels the devices that have not started, which a handler that
            # says nothing for a while would look like: stopped half-way, an update say.
            reporter.report(Progress(text="started"))
        checker = threading.Thread(
            target=self._check_still_pending, args=(key, closed, process), daemon=True
        )
        checker.start()
        if self.options.stream:
            threading.Thread(
                target=self._follow_stream, args=(task, closed, process), daemon=True
            ).start()
        outcome = None
        try:
            while not process.wait(0.2):
                for progress in process.progress_lines():
                    reporter.report(progress)
                if self.token_refused.is_set():
                    # Left running, as if the agent had crashed: started with a new
                    # token, the agent waits for its end and answers it.
                    raise TokenRevoked("The server refused the device's token")
                if closed.is_set():
                    process.kill(self.options.kill_grace)
                    log.info(
                        "%s: cancelled, timed out by the server, or no longer pending: "
                        "handler stopped",
                        key,
                    )
                    self.record(key, {"state": ANSWERED, "task": task, "cancelled": True})
                    return
                if self.stop.is_set():
                    reason = "The agent was stopped while the handler ran."
                    outcome = self.stop_handler(key, process, start, "stopped", {"reason": reason})
                    break
                if time.monotonic() >= deadline:
                    reason = f"The handler timed out after {timeout:g} s."
                    outcome = self.stop_handler(
                        key, process, start, "timed out", {"reason": reason, "timeout": timeout}
                    )
                    break
        finally:
            reporter.close()
            self.running = None
        if outcome is None:
            outcome = ended(process, start)
        self.record(key, {"state": FINISHED, "task": task, "answer": outcome.as_dict()})
        log.info("%s: %s (%s)", key, outcome.status, outcome.title)
        self.answer(key, task, outcome)

    def stop_handler(
        self, key: str, process: HandlerProcess, start: Start, title: str, meta: dict[str, Any]
    ) -> Outcome:
        """Stop the handler; the answer: ``failed`` with ``title`` and ``meta``, or its own,
        had it ended by itself as it was stopped (its exit status says what it did)."""
        if process.kill(self.options.kill_grace):
            log.info("%s: the handler had ended by itself as it was stopped", key)
            return ended(process, start)
        return ended(process, start).stopped(title, meta)

    def _check_still_pending(
        self, key: str, closed: threading.Event, process: HandlerProcess
    ) -> None:
        while not process.exited.wait(self.options.check_interval):
            try:
                tasks = self.client.call(
                    "GET",
                    f"pending?limit={PENDING_LIMIT}",
                    retry_for=self.options.check_interval,
                    expect=a_list,
                    about=key,
                ).data
            except (Refused, Unreachable, Stopped):
                continue  # unknown: keep running; the answer will tell
            if not isinstance(tasks, list):
                continue  # a garbled answer says nothing
            if not process.exited.is_set() and key not in {attempt_key(task) for task in tasks}:
                closed.set()
                return

    def _follow_stream(
        self, task: dict[str, Any], closed: threading.Event, process: HandlerProcess
    ) -> None:
        """Close the task as soon as the stream shows its cancel; give up quietly on errors
        (the pending check is the backstop). Ends at the first event or keep-alive after the
        handler's end."""
        try:
            for name, data in self.client.events("stream"):
                if process.exited.is_set() or closed.is_set():
                    return
                if name != "response" or not isinstance(data, dict):
                    continue  # a keep-alive, or an event that is not the pool's
                meta: dict[str, Any] = data["meta"] if isinstance(data.get("meta"), dict) else {}
                if data.get("parent_id") != task["id"]:
                    continue
                if meta.get("status") == "cancelled":
                    log.info("%s: cancelled (seen on the stream)", attempt_key(task))
                    closed.set()
                    return
                if (
                    meta.get("status") == "timed_out"
                    and meta.get("device") == self.config.device_id
                    and meta.get("attempt") == ((task.get("meta") or {}).get("attempt") or 1)
                ):
                    log.info("%s: timed out by the server (seen on the stream)", attempt_key(task))
                    closed.set()
                    return
        except (OSError, ValueError, http.client.HTTPException) as error:
            log.debug("stream: %s", error)

    def answer(self, key: str, task: dict[str, Any], outcome: Outcome) -> None:
        """Send the answer (retried until it is stored or refused); journal that it was."""
        body = answer_body(task, outcome)
        try:
            self.client.call(
                "POST",
                "response",
                body,
                idempotency_key=f"{key}.{outcome.status}",
                about=key,
                expect=a_message,  # else a portal's JSON would be taken for the answer stored
            )
        except Refused as error:
            if error.status == 401:
                log.warning("%s: answer not sent (%s); it is in the journal", key, error)
                raise TokenRevoked.of(error) from None
            if error.status == 403 and not self._may_poll():
                # The device is refused, not the answer (staff invalidated it): staff may
                # validate it again, and the answer goes once the device may poll.
                log.warning(
                    "%s: answer not sent (%s); it is in the journal until the device is "
                    "validated again",
                    key,
                    error,
                )
                self.answers_waiting = True
                return
            log.warning("%s: the server refused the answer (%s); it is final", key, error)
            self.record(
                key,
                {
                    "state": ANSWERED,
                    "task": task,
                    "answer": outcome.as_dict(),
                    "refused": str(error),
                },
            )
            return
        except (Stopped, Unreachable):
            log.warning("%s: answer not sent yet; it is in the journal for the next start", key)
            return
        # The output first: it may be what fills the disk, and the entry needs room.
        try:
            keep_output_tail(self.journal.directory(key))
        except OSError as error:  # a read-only disk: it is kept whole
            log.debug("%s: output not cut: %s", key, error)
        self.record(key, {"state": ANSWERED, "task": task, "answer": outcome.as_dict()})

    def _may_poll(self) -> bool:
        """Whether the server lets this device ask for its pending tasks (no 403)."""
        try:
            self.client.call("GET", "pending?limit=1", retry_for=self.options.check_interval)
        except Refused as error:
            return error.status != 403
        except (Unreachable, Stopped):
            return True
        return True

    def send_waiting_answers(self) -> None:
        """Send the finished answers the journal holds (refused while the device was not
        validated), now that it may poll again."""
        self.answers_waiting = False
        for key, entry in self.journal.unanswered():
            if entry["state"] == FINISHED:
                log.info("%s: sending the answer kept while the device was refused", key)
                self.answer(key, entry["task"], Outcome(**entry["answer"]))

    # After a crash or a reboot -----------------------------------------------------------

    def recover(self) -> None:
        """Answer what the journal says was finished, and see started handlers to their end."""
        for key, entry in self.journal.unanswered():
            task = entry["task"]
            if entry["state"] == FINISHED:
                log.info("%s: sending the answer left from before", key)
                self.answer(key, task, Outcome(**entry["answer"]))
                continue
            directory = self.journal.directory(key)
            pid = entry.get("pid")
            if pid and not still_running(pid, Start.of(entry).boot, entry.get("pid_started")):
                pid = 0  # it has ended: its pid may be another process's now
            pid = pid or find_wrapper(directory)
            if pid:
                log.info("%s: the handler started before (pid %d): waiting for its end", key, pid)
                adopted = HandlerProcess.adopt(directory, pid)
                self.watch(key, task, adopted, Start.of(entry), adopted=True)
                continue
            if not pid and (directory / "status").exists():
                # Stopped as the handler started, before its pid was journaled: it ran to
                # its end meanwhile, and its exit status says how.
                log.info("%s: the handler ran while no agent did: answering it", key)
                outcome = ended(HandlerProcess.adopt(directory, 0), Start.of(entry))
            elif not HandlerProcess.ever_started(directory):
                # Stopped after journaling the start, before the handler's wrapper ran (it
                # marks its start before the handler), or the wrapper ended before it got
                # that far: the handler never ran. It is taken again, as a task never
                # journaled, if the server still lists it: not one cancelled, expired or
                # whose attempt ended while no agent ran.
                log.info(
                    "%s: the agent stopped before the handler started: it starts if still pending",
                    key,
                )
                self.journal.forget(key)
                continue
            else:
                log.warning(
                    "%s: its handler ended while no agent ran and left no exit status (the "
                    "device lost power?): answered failed, interrupted",
                    key,
                )
                outcome = outcome_of(
                    None,
                    HandlerProcess.adopt(directory, 0).output_tail(),
                    Start.of(entry).elapsed(),
                )
            self.record(key, {"state": FINISHED, "task": task, "answer": outcome.as_dict()})
            self.answer(key, task, outcome)

    # The journal's disk -------------------------------------------------------------------

    def record(self, key: str, entry: dict[str, Any]) -> bool:
        """Journal ``entry``; ``False`` when the state directory cannot be written (full, or
        read-only), which the log says as it starts and as it ends.

        The agent goes on meanwhile: it sends the answers it has (their idempotency
        keys make sending one again harmless, should the journal not know it was sent),
        and starts no task, whose start it could not journal (it might run twice).
        """
        try:
            self.journal.write(key, entry)
        except OSError as error:
            self.journal_failed(error)
            return False
        if self.journal_error is not None:
            log.warning(
                "the journal in %s can be written again: tasks are started again",
                self.options.state_dir,
            )
            self.journal_error = None
        return True

    def journal_failed(self, error: OSError) -> None:
        if self.journal_error is None:
            log.error(
                "cannot write the journal in %s (%s): no task is started until it can be "
                "(free some space, or see why the file system is read-only); answers are "
                "still sent",
                self.options.state_dir,
                error.strerror or error,
            )
        self.journal_error = error.strerror or str(error)

    # Heartbeats --------------------------------------------------------------------------

    def _heartbeats(self) -> None:
        """A heartbeat every ``heartbeat_interval`` seconds, one try each.

        One that fails is not retried: the next beat is the next try, and while
        the server stays unreachable the beats back off (jittered, doubling up
        to the backoff's most), so that a fleet waiting out an outage does not
        add a burst of retries every beat. The outage is logged as it starts
        and as it ends.
        """
        beat = 0
        boot = f"{os.getpid()}.{int(time.time())}"
        failures = 0
        down_since: float | None = None
        while not self.stop.is_set():
            wait = self.options.heartbeat_interval
            try:
                self.client.call(
                    "POST",
                    "heartbeat",
                    {"meta": self.status()},
                    idempotency_key=f"heartbeat.{boot}.{beat}",
                    retry_for=0,
                )
            except Refused as error:
                log.warning("heartbeat not sent: %s", error)
                if error.status == 401:
                    self.refuse_token(error)
            except Unreachable as error:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning(
                        "heartbeat not sent: %s; heartbeats back off until the server answers",
                        str(error).rstrip("."),  # the server's sentence, then ours
                    )
                failures += 1
                wait = max(wait, self.client.backoff.delay(failures))
            except Stopped:
                return
            except Exception:  # never end the heartbeats: the next one may go through
                log.exception("heartbeat not sent")
            else:
                if down_since is not None:
                    log.info(
                        "heartbeat sent: the server answers again, after %.0f s",
                        time.monotonic() - down_since,
                    )
                    down_since, failures = None, 0
            beat += 1
            self.stop.wait(wait)

    # The token's renewal ------------------------------------------------------------------

    def _renewals(self) -> None:
        """Renew the token once it has less than half of its life left, on the server's
        clock: looked at once the server first answers, then every ``token_check_interval``
        seconds.

        A network error (or a 5xx) is retried with the agent's backoff. A 401 says the
        token works nowhere any more: the agent stops, as at a heartbeat's 401. Another
        refusal is logged, the agent goes on with the token it has, and it asks again at
        the next look.
        """
        while not self.stop.is_set():
            # On the server's clock, which the token's times are on: a device's wall clock
            # may be days ahead (no real-time clock, no NTP yet), and every token it gets
            # would look old at every look.
            now = self.client.server_clock.now()
            if now is None:  # the server has not answered yet: looked at once it has
                self.stop.wait(min(1.0, self.options.token_check_interval))
                continue
            if wants_renewal(self.client.token, now):
                try:
                    self.renew_token()
                except Stopped:
                    return
                except Exception:  # never end the renewals: the next look may go through
                    log.exception("the token was not renewed")
            self.stop.wait(self.options.token_check_interval)

    def renew_token(self) -> None:
        """Ask for a new token, save it in the config file, then use it (never logged)."""
        assert self.options.config_path is not None
        try:
            answer = self.client.call(
                "POST",
                "device/token",
                expect=a_renewal(self.config.device_id),
                about="token renewal",
            )
        except Refused as error:
            if error.status == 401:  # the token works nowhere now: as a heartbeat's 401
                log.error("the token was not renewed: the server refuses it (%s)", error)
                self.refuse_token(error)
            elif error.status == 404:
                log.warning(
                    "the token was not renewed: the server has no token renewal (404: %s); "
                    "upgrade it before the token expires",
                    error.detail,
                )
            else:
                log.error(
                    "the server refused to renew the token (%s); the agent goes on with it "
                    "until it stops working, and asks again in %.0f s",
                    error,
                    self.options.token_check_interval,
                )
            return
        token, expires_at = answer.data["token"], answer.data.get("expires_at", "?")
        try:
            save_token(self.options.config_path, self.config, token)
        except (OSError, ConfigError) as error:
            # Not used unsaved: the agent would start again with the token it renewed,
            # as valid as ever, and renew that; asked again at the next look.
            log.error(
                "the renewed token could not be saved (%s): the agent goes on with the one it has",
                error,
            )
            return
        self.config.token = self.client.token = token
        log.info(
            "token renewed: the new one, saved in %s, expires at %s",
            self.options.config_path,
            expires_at,
        )

    def refuse_token(self, error: Refused) -> None:
        """A call beside the main loop got a 401: the agent stops at once, even idle.

        A running handler is left to run (the main loop sees ``token_refused``
        before ``stop``), as if the agent had crashed: started with a new token,
        the agent waits for its end and answers it.
        """
        self.refusal = error
        self.token_refused.set()
        self.stop.set()  # a long-poll or a stream it waits on is given up

    def status(self) -> dict[str, Any]:
        """The small status a heartbeat carries."""
        try:
            load = [round(value, 2) for value in os.getloadavg()]
        except OSError:
            load = []
        return {
            "agent": __version__,
            "uptime": round(time.monotonic() - self.started),
            "load": load,
            "running": self.running,
            **({"journal_error": self.journal_error} if self.journal_error else {}),
        }


def a_message(data: Any) -> bool:
    """Whether ``data`` is a message as the pool answers a write with it."""
    return isinstance(data, dict) and str(data.get("id", "")).startswith("msg_")


def a_list(data: Any) -> bool:
    """Whether ``data`` is a list, as the pool answers ``pending``."""
    return isinstance(data, list)


def ended(process: HandlerProcess, start: Start) -> Outcome:
    """The answer to a handler that has ended: its exit status, output and how long it ran
    (to its end, also when it ended while no agent ran).

    To the end this agent saw, on the monotonic clock; for one that ended while no agent
    ran, to its status file's time, within the time since it started.
    """
    if process.seen_ending is not None:
        seconds = start.elapsed() - (time.monotonic() - process.seen_ending)
    else:
        seconds = start.elapsed(until=process.ended_at())
    return outcome_of(process.exit_code(), process.output_tail(), max(0.0, seconds))


def answer_body(task: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    meta = dict(outcome.meta)
    attempt = (task.get("meta") or {}).get("attempt")
    if attempt is not None:
        meta["attempt"] = attempt  # the answer ends this attempt, not a later one
    return {
        "parent_id": task["id"],
        "status": outcome.status,
        "title": sendable(outcome.title),
        "body": sendable(outcome.body),
        "meta": {
            key: sendable(value) if isinstance(value, str) else value for key, value in meta.items()
        },
    }


def sendable(text: str) -> str:
    """``text`` with its NUL characters (which the server refuses) replaced by U+FFFD."""
    return text.replace("\0", "\ufffd")


class ProgressReporter:
    """Sends ``progress:`` lines as progress answers, at most one per interval (the latest).

    A ``step-timeout:`` line is not left out that way: the next answer carries
    it (``meta.step_timeout``), with the latest text. A 409 (the task was
    cancelled, or its attempt ended) or a 404 (it is gone) closes the task; a
    401 stops the agent, leaving the handler to run; any other refusal loses
    that report only.

    Each report has an idempotency key of its own, kept across its retries: a
    restarted agent, or a report given up on a bad network, never reuses one.
    """

    def __init__(self, agent: Agent, key: str, task: dict[str, Any], closed: threading.Event):
        self.agent, self.key, self.task, self.closed = agent, key, task, closed
        self.latest: str | None = None
        self.text = ""  # the last text reported, which a step timeout alone repeats
        self.step_timeout: float | None = None
        self.done = False
        self.condition = threading.Condition()
        self.thread = threading.Thread(target=self._send, name="taskpool-progress", daemon=True)
        self.thread.start()

    def report(self, progress: Progress) -> None:
        with self.condition:
            if progress.text is not None:
                self.text = progress.text[:PROGRESS_TEXT_MAX]
            if progress.step_timeout is not None:
                self.step_timeout = progress.step_timeout
            self.latest = self.text
            self.condition.notify()

    def close(self) -> None:
        with self.condition:
            self.done = True
            self.latest = None
            self.condition.notify()
        # A report under way gets 2 s to land before the answer; not once stopping, whose
        # time is the answer's (a later report is refused: the task is closed by then).
        self.thread.join(timeout=0 if self.agent.stop.is_set() else 2)

    def _send(self) -> None:
        interval = self.agent.options.progress_interval
        while True:
            with self.condition:
                while self.latest is None and not self.done:
                    self.condition.wait()
                if self.done:
                    return
                text, self.latest = self.latest, None
                step_timeout, self.step_timeout = self.step_timeout, None
            meta = {} if step_timeout is None else {"step_timeout": step_timeout}
            outcome = Outcome("progress", "progress", text or "", meta)
            try:
                self.agent.client.call(
                    "POST",
                    "response",
                    answer_body(self.task, outcome),
                    idempotency_key=f"{self.key}.progress.{secrets.token_hex(8)}",
                    expect=a_message,
                    retry_for=10 * interval,
                    about=self.key,
                )
            except Refused as error:
                if error.status == 401:
                    log.warning("%s: progress not sent (%s)", self.key, error)
                    self.agent.refuse_token(error)
                    return
                if error.status in (404, 409):
                    log.info("%s: progress refused (%s): the task is closed", self.key, error)
                    self.closed.set()
                    return
                log.warning("%s: progress refused (%s); the handler goes on", self.key, error)
            except (Unreachable, Stopped):
                pass
            time.sleep(interval)  # what is printed meanwhile: its latest line, next
