"""``python -m bench.database`` runs end to end on a small history.

Its loader copies the day files into PostgreSQL by replaying them with the
rules' own ``TaskState``, then checks that both stores give the same
pending lists: a change to the rules' state must keep it working, and only
running it shows that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_the_database_bench_loads_a_history_and_finds_the_same_pending_lists(postgres_url):
    result = subprocess.run(
        [sys.executable, "-m", "bench.database", "--quick", "--only", "pending"],
        cwd=REPOSITORY,
        env={**os.environ, "TASKPOOL_BENCH_POSTGRES": postgres_url},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "equal the JSON Lines store's on the same files" in result.stdout
