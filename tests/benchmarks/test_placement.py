"""benchmarks.placement: preemption counts read from /proc, and a short run printing both placements."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from benchmarks.placement import main, preempted_by, preemptions
from benchmarks.wakeups import perf_missing


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


def test_preempted_by_counts_who_took_the_cpu_from_a_runnable_proxy_thread() -> None:
    """Only switches away from a proxy thread still runnable (R, R+) count, under the label given for the next pid
    or else its command name (spaces and all); a proxy thread going to sleep, or another process preempted, not."""
    trace = "\n".join(
        [
            "prev_comm=python prev_pid=100 prev_prio=120 prev_state=R ==> next_comm=wrk next_pid=7 next_prio=120",
            "prev_comm=python prev_pid=101 prev_prio=120 prev_state=R+ ==> next_comm=wrk next_pid=7 next_prio=120",
            "prev_comm=python prev_pid=100 prev_prio=120 prev_state=R ==> next_comm=python next_pid=200 next_prio=125",
            "prev_comm=python prev_pid=100 prev_prio=120 prev_state=S ==> next_comm=nginx next_pid=8 next_prio=120",
            "prev_comm=wrk prev_pid=7 prev_prio=120 prev_state=R ==> next_comm=python next_pid=100 next_prio=120",
            "prev_comm=python prev_pid=100 prev_prio=120 prev_state=R ==> next_comm=Web Content next_pid=9 next_prio=1",
        ]
    )
    who = preempted_by(trace, {100, 101}, {200: "shadow worker"})
    assert who == {"wrk": 2, "shadow worker": 1, "Web Content": 1}


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


@pytest.mark.slow
@pytest.mark.skipif(
    not _TOOLS or (os.cpu_count() or 1) < 2 or perf_missing() is not None,
    reason="needs wrk, nginx, taskset, linux-perf (apt-get install wrk nginx linux-perf), perf allowed, 2 cores",
)
def test_who_names_what_preempted_the_proxy_in_each_free_setup(capsys: pytest.CaptureFixture[str]) -> None:
    """With --who, each free setup gets a line: who preempted the proxy per request, or why perf could not say."""
    assert main(["--rounds", "1", "--seconds", "1", "--who"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("who preempts the proxy")]
    assert [line.split(",")[1].strip() for line in lines] == ["pass", "shadow"]
    assert all("per request" in line or "could not record" in line for line in lines)
