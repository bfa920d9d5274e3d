"""What is wrong with the data directory: the day files' health check and system check.

Whether it can take an append is tested by creating, writing and removing a
file in it, which is what an append needs, and what a permission bit, a
read-only mount or a full disk refuses, also to root. A day file that is a
symbolic link to nothing is named (the pool refuses to read with one, rather
than read its day as empty).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from django.core import checks

from taskpool.days import broken_link, day_of_file_name


def directory_problem(directory: Path) -> str | None:
    """What stops ``directory`` taking an append, in one sentence; ``None`` when nothing does."""
    if not directory.is_dir():
        return "The data directory is missing or not a directory."
    probe = directory / f".health-{uuid.uuid4().hex}"
    try:
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as error:
        return f"The data directory takes no new file: {os.strerror(error.errno or 0)}."
    problem = None
    try:
        os.write(descriptor, b"\n")  # a full disk refuses this, where it took the file
    except OSError as error:
        problem = f"The data directory takes no write: {os.strerror(error.errno or 0)}."
    finally:
        os.close(descriptor)
    try:
        os.unlink(probe)
    except OSError as error:
        return problem or (
            f"The data directory lets no file be removed: {os.strerror(error.errno or 0)}."
        )
    return problem


def creation_problem(directory: Path) -> str | None:
    """Why ``directory`` is not, or cannot become, a writable directory; ``None`` if it can.

    Said as the end of a sentence about the setting. A directory still to
    be made is judged by the nearest part of its path that exists: the store
    makes the rest at its first start.
    """
    if os.path.exists(directory):
        if os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK):
            return None
        return f"is not a writable directory: {directory}."
    existing = next(parent for parent in directory.parents if os.path.exists(parent))
    if os.path.isdir(existing) and os.access(existing, os.W_OK | os.X_OK):
        return None
    return f"cannot be made: {existing} is not a writable directory."


def broken_day_links(directory: Path) -> list[checks.CheckMessage]:
    """A day file that is a symbolic link to nothing (``taskpool.W004``).

    A warning, not an error: an error would stop ``taskpool_verify``, which
    says the same, and every other command.
    """
    try:
        names = sorted(os.listdir(directory))
    except OSError:  # no directory yet: made at the first start
        return []
    found: list[checks.CheckMessage] = []
    for name in names:
        if day_of_file_name(name) is None:
            continue
        target = broken_link(directory / name)
        if target is not None:
            found.append(
                checks.Warning(
                    f"The day file {directory / name} is a symbolic link to {target}, which "
                    "does not exist: the pool refuses to read until it is mended.",
                    hint="Restore the file it points to; or, if that day is gone for good, "
                    "remove the link.",
                    id="taskpool.W004",
                )
            )
    return found
