"""``taskpool-agent enroll`` and ``taskpool-agent run``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from taskpool_agent import __version__
from taskpool_agent.agent import Agent, Options
from taskpool_agent.client import Backoff, Refused, Stopped, Unreachable
from taskpool_agent.config import DEFAULT_PATH, Config, ConfigError, load, token_device
from taskpool_agent.enroll import enroll
from taskpool_agent.journal import JournalInUse
from taskpool_agent.renewal import CHECK_INTERVAL_SECONDS

#: Exit statuses (sysexits): another agent holds the state directory, so try again later;
#: the state directory cannot be written (read-only, full).
EX_TEMPFAIL, EX_CANTCREAT = 75, 73


def _shared_options(*, with_defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name.

    After the name they carry no defaults, so that they override what was
    given before it only when given.
    """

    def default(value: object) -> object:
        return value if with_defaults else argparse.SUPPRESS

    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--config",
        type=Path,
        default=default(DEFAULT_PATH),
        help=f"The config file (default {DEFAULT_PATH}).",
    )
    shared.add_argument(
        "--log-level",
        type=str.upper,  # debug or DEBUG
        default=default("INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    shared.add_argument(
        "--backoff-max",
        type=float,
        default=default(60.0),
        help="Longest wait between retries, seconds.",
    )
    return shared


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="taskpool-agent",
        description="The device side of a taskpool fleet.",
        parents=[_shared_options(with_defaults=True)],
    )
    main.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    after_name = _shared_options(with_defaults=False)
    commands = main.add_subparsers(dest="command", required=True)

    joining = commands.add_parser(
        "enroll", help="Ask to join the fleet and wait for approval.", parents=[after_name]
    )
    joining.add_argument("--server", required=True, help="The pool's URL, e.g. https://host/pool/")
    joining.add_argument("--device-id", required=True)
    joining.add_argument("--kind", default="", help="What the device is (raspberry-pi ...).")
    joining.add_argument("--enrollment-key", help="The site's enrollment key, if it has one.")
    joining.add_argument(
        "--poll-interval", type=float, help="Seconds between asks (default: what the server says)."
    )

    running = commands.add_parser(
        "run", help="Run the tasks pending for this device.", parents=[after_name]
    )
    running.add_argument("--handlers", type=Path, help="The handlers directory.")
    running.add_argument("--state-dir", type=Path, help="Where the journal is kept.")
    running.add_argument("--wait", type=float, default=30.0, help="Long-poll seconds (default 30).")
    running.add_argument("--heartbeat-interval", type=float, default=30.0)
    running.add_argument(
        "--check-interval",
        type=float,
        default=5.0,
        help="How often a running task is checked for cancellation, seconds (default 5).",
    )
    running.add_argument(
        "--handler-timeout",
        type=float,
        default=3600.0,
        help="A handler's time when its task names none (meta.handler_timeout, else the "
        "job's timeout.in_progress), seconds (default 3600).",
    )
    running.add_argument(
        "--no-stream",
        dest="stream",
        action="store_false",
        help="Do not follow the event stream while a handler runs (a proxy that buffers it); "
        "cancels are then seen by the check every --check-interval seconds.",
    )
    running.add_argument(
        "--kill-grace", type=float, default=2.0, help="SIGTERM to SIGKILL, seconds (default 2)."
    )
    running.add_argument(
        "--token-check-interval",
        type=float,
        default=CHECK_INTERVAL_SECONDS,
        help="How often the token's age is looked at, seconds (default "
        f"{CHECK_INTERVAL_SECONDS:g}): past half its life, a new one is asked for and saved "
        "in the config file.",
    )
    return main


def directory(given: Path | None, configured: str | None, default: Path, base: Path) -> Path:
    """A directory named on the command line (from the working directory), else in the
    config file (from the file's directory), else ``default``: made absolute, since
    handlers run in a directory of their own."""
    if given is not None:
        return given.expanduser().absolute()
    chosen = Path(configured).expanduser() if configured else default.expanduser()
    return (base / chosen).absolute()


def relay_signals(stop: threading.Event) -> None:
    """``stop`` is set at SIGTERM or SIGINT, by a thread the signal wakes, not by the handler.

    A handler runs between two steps of the main thread, which may hold the lock that
    ``stop.set()`` takes (in ``stop.wait()``, or a first signal's ``set()``): set there, it
    waited for itself for good, and the unit's stop ended in a SIGKILL. The handler does
    nothing; Python writes each signal to the wakeup pipe, whose reader sets ``stop``.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: None)

    def relay() -> None:
        os.read(read_end, 1)
        stop.set()

    threading.Thread(target=relay, name="taskpool-agent-signals", daemon=True).start()


def run_options(
    arguments: argparse.Namespace, config: Config, config_path: Path, backoff: Backoff
) -> Options:
    """What ``run`` runs with: the command line's, then the config file's, then defaults.

    The config's directories, and the default ``handlers`` beside it, are found from the
    config file's directory, however the config's path was given.
    """
    base = config_path.parent
    return Options(
        handlers=directory(arguments.handlers, config.handlers, Path("handlers"), base),
        state_dir=directory(
            arguments.state_dir, config.state_dir, Path("~/.local/state/taskpool-agent"), base
        ),
        wait=arguments.wait,
        heartbeat_interval=arguments.heartbeat_interval,
        check_interval=arguments.check_interval,
        handler_timeout=arguments.handler_timeout,
        kill_grace=arguments.kill_grace,
        stream=arguments.stream,
        backoff=backoff,
        config_path=config_path,
        token_check_interval=arguments.token_check_interval,
    )


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    logging.basicConfig(
        level=arguments.log_level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    stop = threading.Event()
    relay_signals(stop)
    backoff = Backoff(first=min(1.0, arguments.backoff_max), most=arguments.backoff_max)
    config_path = arguments.config.expanduser()
    state_dir: Path | None = None  # known once the config is read
    try:
        if arguments.command == "enroll":
            enroll(
                config_path,
                server=arguments.server,
                device_id=arguments.device_id,
                kind=arguments.kind,
                enrollment_key=arguments.enrollment_key,
                poll_interval=arguments.poll_interval,
                backoff=backoff,
                stop=stop,
            )
            return 0
        config = load(config_path)
        if not config.token:
            raise ConfigError(f"{config_path} has no token yet: run taskpool-agent enroll.")
        named = token_device(config.token)
        if named is not None and named != config.device_id:
            # It would serve the token's device while it says, and checks, the other.
            raise ConfigError(
                f"{config_path}: the token is device {named}'s, but device_id is "
                f"{config.device_id}: make them the same device."
            )
        options = run_options(arguments, config, config_path, backoff)
        state_dir = options.state_dir
        return Agent(config, options, stop).run()
    except ConfigError as error:
        print(f"taskpool-agent: {error}", file=sys.stderr)
        return 78
    except Refused as error:
        print(f"taskpool-agent: the server refused: {error}", file=sys.stderr)
        return 1
    except (Stopped, KeyboardInterrupt, Unreachable):
        return 130 if stop.is_set() else 1
    except JournalInUse as error:
        print(f"taskpool-agent: {error}", file=sys.stderr)
        return EX_TEMPFAIL
    except OSError as error:
        # The machine's, not the network's (those are retried where they happen): a state
        # directory read-only or full, most likely. One line; a service manager tries again.
        where = error.filename or state_dir  # a full disk names no file: its directory
        where = f"{where}: " if where else ""
        print(f"taskpool-agent: {where}{error.strerror or error}", file=sys.stderr)
        return EX_CANTCREAT
