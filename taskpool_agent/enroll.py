"""Joining the fleet: ask to enroll, wait for staff to approve, keep the token.

The secret the server hands out is written to the config file at once, so
that an ``enroll`` interrupted while it waits resumes waiting when it is run
again (enrolling the same id twice is refused).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from taskpool_agent.client import Backoff, PoolClient
from taskpool_agent.config import Config, ConfigError, check_server, load, save

log = logging.getLogger("taskpool_agent")


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
    config = _resumable(path, server, device_id) or Config(server=server, device_id=device_id)
    client = PoolClient(config.base_url, backoff=backoff or Backoff(), stop=stop)
    if not config.enrollment_secret:
        headers = {"Enrollment-Key": enrollment_key} if enrollment_key else {}
        body = {"device_id": device_id, "kind": kind, "meta": {"agent": "taskpool-agent"}}
        answer = client.call("POST", "enroll", body, headers=headers)
        config.enrollment_secret = answer.data["enrollment_secret"]
        save(path, config)
        print(f"Asked to join as {device_id}: waiting for staff to approve it.", flush=True)
    else:
        print(f"Waiting for staff to approve {device_id} (asked before).", flush=True)
    while True:
        answer = client.call(
            "GET", f"enroll/{device_id}", headers={"Enrollment-Secret": config.enrollment_secret}
        )
        if answer.status == 200:
            config.token = answer.data["token"]
            config.enrollment_secret = ""
            save(path, config)
            print(f"Approved: the token is saved in {path}.", flush=True)
            return config
        delay = poll_interval or float(answer.headers.get("Retry-After") or 5)
        if stop.wait(delay):
            raise KeyboardInterrupt


def _enrolled(path: Path, server: str, device_id: str) -> Config | None:
    """The config of this device at this server when it has its token (``enroll`` run again)."""
    try:
        config = load(path)
    except ConfigError:
        return None
    if config.server == server and config.device_id == device_id and config.token:
        return config
    return None


def _resumable(path: Path, server: str, device_id: str) -> Config | None:
    """The config of an enrollment of this device at this server still waiting, if any."""
    try:
        config = load(path)
    except ConfigError:
        return None
    if config.server == server and config.device_id == device_id and config.enrollment_secret:
        return config
    return None
