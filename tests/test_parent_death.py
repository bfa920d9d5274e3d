"""A worker ends with the process that started it (``taskpool.stores.jsonl.parent_death``),
by the kernel's signal on Linux and by watching its parent's pid elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_parallel_replay import running

pytestmark = pytest.mark.slow

#: A parent that starts a child tied to it, prints the child's pid, and waits.
PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())])
print(child.pid, flush=True)
time.sleep(600)
"""
CHILD = """
import sys, time
from taskpool.stores.jsonl import parent_death
if {without_the_kernel}:
    parent_death._ask_the_kernel = lambda: False
parent_death.end_with_parent(int(sys.argv[1]))
time.sleep(600)
"""


@pytest.mark.parametrize("without_the_kernel", [False, True], ids=["pdeathsig", "watching"])
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="looks at processes in /proc")
def test_a_child_ends_soon_after_its_parent_is_killed(without_the_kernel):
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child_code = CHILD.format(without_the_kernel=without_the_kernel)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, child_code], stdout=subprocess.PIPE, env=environment
    )
    child = int(parent.stdout.readline())
    try:
        time.sleep(1)  # the child has imported and asked
        assert running(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        killed_at = time.monotonic()
        while running(child) and time.monotonic() - killed_at < 10:
            time.sleep(0.01)
        assert time.monotonic() - killed_at < 1.0
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
        if running(child):
            os.kill(child, signal.SIGKILL)


def test_a_child_whose_parent_is_already_gone_ends_at_once():
    """The parent died before the child asked: the kernel will send nothing."""
    not_my_parent = os.getpid() + 1_000_000
    code = (
        "from taskpool.stores.jsonl import parent_death; "
        f"parent_death.end_with_parent({not_my_parent}); print('read on')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stdout == ""
