"""benchmarks.placement: preemption counts read from /proc, and a short run printing both placements."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from benchmarks.placement import main, preemptions


def test_preemptions_of_a_process_that_is_gone_are_zero() -> None:
    """A pid whose process has exited (and been reaped) reads as 0 rather than raising."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert preemptions(proc.pid) == 0


def test_preemptions_of_a_running_process_sum_its_threads() -> None:
    """This process's count is the sum of its threads' nonvoluntary_ctxt_switches, read from /proc as it is."""
    pid = os.getpid()
    counted = preemptions(pid)
    by_thread = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            by_thread += int(f.read().split("nonvoluntary_ctxt_switches:")[1].split()[0])
    assert 0 <= counted <= by_thread  # read a moment later: only ever more


_TOOLS = all(shutil.which(tool) for tool in ("wrk", "nginx", "taskset"))


@pytest.mark.slow
@pytest.mark.skipif(
    not _TOOLS or (os.cpu_count() or 1) < 2, reason="needs wrk, nginx, taskset (apt-get install wrk nginx) and 2 cores"
)
def test_a_short_run_prints_every_setup_and_both_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    """One round of a second per setup: the four setups get a row with a request rate, and both placements a
    shadow / pass-through ratio."""
    assert main(["--rounds", "1", "--seconds", "1"]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith(("pass,", "shadow,")) and "/" not in line]
    rows = {line[:18].strip(): line[18:].split() for line in table}
    assert list(rows) == ["pass, free", "shadow, free", "pass, pinned", "shadow, pinned"]
    assert all(float(row[0].replace(",", "")) > 0 for row in rows.values())
    assert "shadow / pass-through, free: " in out
    assert "shadow / pass-through, pinned: " in out
