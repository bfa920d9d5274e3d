"""Whether the data directory can take an append: the day files' health check.

Tested by creating, writing and removing a file in it, which is what an
append needs, and what a permission bit, a read-only mount or a full disk
refuses, also to root.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


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
