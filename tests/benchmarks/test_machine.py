"""benchmarks.machine: what `make bench` records of the machine beside its figures."""

from __future__ import annotations

import json
import platform

from benchmarks.machine import describe, summary


def test_the_machine_record_names_cpu_kernel_python_build_and_a_calibration() -> None:
    """The record holds this machine's CPU, core count, kernel and Python version, a positive loop time, and is
    JSON as `make bench` stores it; the summary line carries the same values."""
    machine = describe()
    assert machine["cores"]
    assert machine["cpu"]
    assert machine["kernel"] == platform.release()
    assert platform.python_version() in str(machine["python"])
    step = machine["python_loop_ns_per_step"]
    assert isinstance(step, float)
    assert 0 < step < 10_000
    assert json.loads(json.dumps(machine)) == machine
    line = summary(machine)
    assert str(machine["cpu"]) in line
    assert f"{step} ns" in line
