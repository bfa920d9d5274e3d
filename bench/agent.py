"""What the device agent costs: the time from a handler's exit to its answer stored, and
the agent's memory while it waits.

    python -m bench.agent [--tasks 50]

It serves a throwaway demo site (one uvicorn process, as ``bench.fleet
--serve`` builds it), runs the real ``taskpool-agent`` process as one device,
and measures:

- **idle memory**: the agent's resident memory (VmRSS) after it has waited,
  long-polling and heartbeating, for a few seconds with nothing to do;
- **exit to answer stored**: tasks are posted one at a time to a handler
  whose last act is to write the time (``date +%s.%N``) to a file; the agent
  writes its journal entry (``answered``, with its time) once the server has
  answered 201. The difference is what the agent adds: noticing the exit,
  reading the output's tail, journaling the end (with an fsync), and the
  POST with the server's own append. As a baseline from the same run, the
  same POST's round trip made by this process (the server's share).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.fleet import provision, serve
from bench.realtime_load import ROOT, summary

STAMP = '#!/bin/sh\necho "stamping"\ndate +%s.%N > "$1"\n'


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def journal_entry(state_dir: Path, task_id: str) -> dict | None:
    try:
        return json.loads((state_dir / "tasks" / f"{task_id}.1" / "entry.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before measuring")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="taskpool-agent-bench-") as temporary:
        directory = Path(temporary)
        os.environ["TASKPOOL_VAR_DIR"] = str(directory)
        os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
        tokens = provision(2)
        server, url = serve(directory, workers=1)
        handlers = directory / "handlers"
        handlers.mkdir()
        (handlers / "stamp").write_text(STAMP)
        (handlers / "stamp").chmod(0o755)
        config = directory / "agent.toml"
        config.write_text(
            f'server = "{url}"\ndevice_id = "sim-00000"\n'
            f'token = "{tokens["devices"]["sim-00000"]}"\n'
        )
        state = directory / "state"
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "taskpool_agent",
                "--config",
                str(config),
                "--log-level",
                "WARNING",
                "run",
                "--handlers",
                str(handlers),
                "--state-dir",
                str(state),
                "--wait",
                "30",
            ],  # fmt: skip
            cwd=ROOT,
        )
        master = {"Authorization": f"Bearer {tokens['master']}"}
        device = {"Authorization": f"Bearer {tokens['devices']['sim-00001']}"}
        try:
            time.sleep(options.idle)
            idle = rss_mib(agent.pid)
            overheads, baseline = [], []
            with httpx.Client(base_url=url, timeout=30) as client:
                for number in range(options.tasks):
                    stamp = directory / f"stamp-{number}"
                    body = {
                        "to": "device:sim-00000",
                        "title": "stamp",
                        "meta": {"args": [str(stamp)]},
                    }
                    task = client.post("task", json=body, headers=master).json()
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        entry = journal_entry(state, task["id"])
                        if entry is not None and entry["state"] == "answered":
                            break
                        time.sleep(0.02)
                    else:
                        raise RuntimeError(f"task {number} was not answered")
                    overheads.append(entry["updated_at"] - float(stamp.read_text()))
                    # The server's share, from here: the same answer, from another device.
                    other = client.post(
                        "task", json={"to": "device:sim-00001", "title": "x"}, headers=master
                    ).json()
                    began = time.perf_counter()
                    client.post(
                        "response",
                        json={"parent_id": other["id"], "status": "done", "body": "x" * 100},
                        headers={**device, "Idempotency-Key": f"bench-{number}"},
                    )
                    baseline.append(time.perf_counter() - began)
            busy = rss_mib(agent.pid)
        finally:
            agent.terminate()
            agent.wait(timeout=15)
            server.terminate()
            server.wait(timeout=30)
    figures = {
        "agent_idle_rss_mib": round(idle, 1),
        "agent_rss_after_tasks_mib": round(busy, 1),
        "handler_exit_to_answer_stored": summary(overheads),
        "baseline_answer_post_round_trip": summary(baseline),
        "p50_ratio_to_baseline": round(
            statistics.median(overheads) / statistics.median(baseline), 2
        ),
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
    }
    text = json.dumps(figures, indent=2)
    print(text)
    if options.json:
        options.json.write_text(text + "\n")
    return figures


if __name__ == "__main__":
    main()
