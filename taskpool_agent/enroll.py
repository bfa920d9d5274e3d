"""Joining the fleet: ask to enroll, wait for staff to approve, keep the token.

The request carries an ``Idempotency-Key`` written to the config file before
it is sent, and the secret the server hands out is written there at once: an
``enroll`` whose answer was lost, or that was interrupted while it waits,
asks again with the same key and gets the same secret (enrolling the same id
without it is refused). A token whose answer was lost is asked for again
with the secret, which the server allows for a few minutes.

A request the server no longer has (staff refused it, or it waited too long
and was forgotten) ends the wait: the agent forgets its key and secret too,
and says so, so that ``enroll`` run again asks anew.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from taskpool_agent.client import NOT_THE_POOL, Backoff, PoolClient, Refused, retry_after
from taskpool_agent.config import Config, ConfigError, check_server, kept_paths, load, save

log = logging.getLogger("taskpool_agent")

#: Enrolling is done at a terminal: a redirect, or a page that is not the pool's (the
#: site's root given as --server), ends it at once, saying so, instead of being retried.
PAGES_REFUSE = frozenset(range(300, 500))


def enroll(
    path: Path,
    *,
    server: str,
    device_id: str,
    kind: str = "",
    enrollment_key: str | None = None,
    poll_interval: float | None = None,
    backoff: Backoff | None = None,
    stop: threading.Event | None = None,
) -> Config:
    """Enroll ``device_id`` at ``server`` and wait for its token; the saved config."""
    stop = stop or threading.Event()
    check_server(server, where="--server")
    enrolled = _enrolled(path, server, device_id)
    if enrolled is not None:
        print(f"{device_id} is enrolled already: its token is in {path}.", flush=True)
        return enrolled
    _keep_a_token(path)
    config = _resumable(path, server, device_id) or _new(path, server, device_id)
    client = PoolClient(config.base_url, backoff=backoff or Backoff(), stop=stop)
    if not config.enrollment_secret:
        undo = None
        if not config.enrollment_request:
            undo = _undo_of(path)
            config.enrollment_request = secrets.token_urlsafe(32)
            save(path, config)  # before asking: a lost answer is asked for again with it
        headers = {"Enrollment-Key": enrollment_key} if enrollment_key else {}
        body = {"device_id": device_id, "kind": kind, "meta": {"agent": "taskpool-agent"}}
        try:
            answer = client.call(
                "POST",
                "enroll",
                body,
                headers=headers,
                idempotency_key=config.enrollment_request,
                expect=an_enrollment,
                page_refuses=PAGES_REFUSE,
            )
        except Refused as refused:
            if undo is not None:  # refused for good: the config file as it was
                undo()
            if refused.status == 404 and not refused.detail.startswith(NOT_THE_POOL):
                # The pool never answers a request to join with 404: a URL of the site's
                # under the pool's (its docs, say) does, in the pool's own words.
                raise Refused(404, f"{NOT_THE_POOL}: {refused.detail}") from refused
            raise
        config.enrollment_secret = answer.data["enrollment_secret"]
        save(path, config)
        print(f"Asked to join as {device_id}: waiting for staff to approve it.", flush=True)
    else:
        print(f"Waiting for staff to approve {device_id} (asked before).", flush=True)
    while True:
        try:
            answer = client.call(
                "GET",
                f"enroll/{device_id}",
                headers={"Enrollment-Secret": config.enrollment_secret},
                expect=a_token_or_a_wait,
                page_refuses=PAGES_REFUSE,
            )
        except Refused as refused:
            if refused.status == 404 and not refused.detail.startswith(NOT_THE_POOL):
                config.enrollment_secret = config.enrollment_request = ""
                save(path, config)
                raise Refused(
                    404,
                    f"the server no longer has the enrollment request of {device_id} (staff "
                    "refused it, or it waited too long): run enroll again to ask anew",
                ) from refused
            raise
        if answer.status == 200:
            config.token = answer.data["token"]
            config.enrollment_secret = config.enrollment_request = ""
            save(path, config)
            print(f"Approved: the token is saved in {path}.", flush=True)
            return config
        delay = poll_interval or retry_after(answer.headers) or 5.0
        if stop.wait(delay):
            raise KeyboardInterrupt


def an_enrollment(data: Any) -> bool:
    """Whether ``data`` is the pool's answer to an enrollment: it holds the secret."""
    return isinstance(data, dict) and isinstance(data.get("enrollment_secret"), str)


def a_token_or_a_wait(data: Any) -> bool:
    """Whether ``data`` is the pool's answer to a device waiting for its token."""
    return isinstance(data, dict) and (
        isinstance(data.get("token"), str) or data.get("status") == "waiting"
    )


def _enrolled(path: Path, server: str, device_id: str) -> Config | None:
    """The config of this device at this server when it has its token (``enroll`` run again)."""
    try:
        config = load(path)
    except ConfigError:
        return None
    if _same_server(config, server) and config.device_id == device_id and config.token:
        return config
    return None


def _keep_a_token(path: Path) -> None:
    """``ConfigError`` when the config at ``path`` holds a token (another device's, or at
    another server): an enrollment would overwrite it before its own token came, and a
    token lost is one only staff can give again."""
    try:
        config = load(path)
    except ConfigError:
        return
    if config.token:
        raise ConfigError(
            f"{path} holds the token of {config.device_id} at {config.server}: enrolling "
            "would replace it. Give another --config, or move that file aside first."
        )


def _same_server(config: Config, server: str) -> bool:
    """Whether ``server`` names the config's server (``/pool`` and ``/pool/`` alike)."""
    return config.base_url == Config(server=server, device_id=config.device_id).base_url


def _resumable(path: Path, server: str, device_id: str) -> Config | None:
    """The config of an enrollment of this device at this server still waiting, if any."""
    try:
        config = load(path)
    except ConfigError:
        return None
    if (
        _same_server(config, server)
        and config.device_id == device_id
        and (config.enrollment_secret or config.enrollment_request)
    ):
        return config
    return None


def _new(path: Path, server: str, device_id: str) -> Config:
    """The config of a new enrollment: the handlers and state directory a config file
    already at ``path`` names are kept, even in a file that names nothing else (the journal
    is there: a task it has an entry for is never run again)."""
    handlers, state_dir = kept_paths(path)
    return Config(server=server, device_id=device_id, handlers=handlers, state_dir=state_dir)


def _undo_of(path: Path) -> Callable[[], object]:
    """What puts ``path`` back as it is now: the same bytes, or no file."""
    try:
        contents = path.read_bytes()
    except FileNotFoundError:
        return lambda: path.unlink(missing_ok=True)
    return lambda: path.write_bytes(contents)
