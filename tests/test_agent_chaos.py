"""The agent chaos run works end to end: two real agents through chaos proxies, with power
cuts, against the demo site it serves, finds nothing wrong and says what it did.

Short and with a fixed seed, so that the tool itself keeps working; its long runs, which
look for the agent's faults, are the benchmark's (docs/fleet.md).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.live import ROOT

pytestmark = pytest.mark.slow


def test_a_short_chaos_run_injects_faults_and_finds_no_violation(tmp_path):
    report = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "bench.agent_chaos", "--agents", "2", "--seed", "7",
        "--duration", "30", "--drain", "60", "--post-every", "0.5",
        "--fault-rate", "0.4", "--cut-every", "5", "--json", str(report),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    figures = json.loads(report.read_text())
    assert done.returncode == 0, figures["violations"] or done.stderr[-2000:]
    assert figures["violations"] == []
    assert sum(figures["tasks"].values()) > 20
    assert figures["executions_started"] > 0
    assert set(figures["faults"]) >= {"delay", "reset_before", "reset_after", "truncate"}
    assert sum(figures["kills"].values()) > 0
