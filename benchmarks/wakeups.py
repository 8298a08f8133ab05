"""Where a proxy's kernel time goes: the share of its CPU samples in the kernel, and in waking a peer (`perf`).

Used by `benchmarks.cpu_split --perf`. On loopback every send runs the receiver's TCP stack in the sender's system
call, and when the receiver sleeps in epoll_wait that ends in `sock_def_readable` waking it. On a virtual machine
waking a task on the other core takes an inter-processor interrupt, which the hypervisor handles; the time shows in
`_raw_spin_unlock_irqrestore` under `sock_def_readable`, where interrupts are enabled again. A proxy whose peers (the
load generator, the back end) are often asleep pays that on most sends; one fast enough to keep them busy seldom does.
This is what makes `pass-through / nginx` depend on the machine kind (README, "Performance"), so it is measured here
rather than asserted.

Needs `perf` (Debian's linux-perf) and permission to sample another process (root, or kernel.perf_event_paranoid
at most 1); the software clock event works where a virtual machine has no hardware counters.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Samples per second: perf's default (4,000) with call stacks cost the sampled Python process about a third more CPU
# per request; at 499 the figures beside it stay within their spread and a few seconds still give thousands of samples.
FREQUENCY = 499
WAKE = "sock_def_readable"  # the kernel function that wakes a task waiting for a socket to become readable


@dataclass(frozen=True)
class KernelShare:
    samples: int
    kernel: float  # share of samples whose innermost frame is in the kernel
    waking: float  # share of samples under `WAKE` (waking a peer that waits on a socket)


def perf_missing() -> str | None:
    """Why `record` cannot run here, or None."""
    if shutil.which("perf") is None:
        return "perf is not installed (apt-get install linux-perf)"
    probe = subprocess.run(["perf", "stat", "-e", "cpu-clock", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"perf cannot sample here: {probe.stderr.strip().splitlines()[-1:] or probe.returncode}"
    return None


@dataclass(frozen=True)
class Recording:
    proc: subprocess.Popen[bytes]
    data: Path


def record(pid: int, seconds: float) -> Recording:
    """Start sampling `pid` (call stacks, the software CPU clock) for `seconds`; `shares` reads the result."""
    data = Path(tempfile.mkdtemp(prefix="strangler-perf-")) / "perf.data"
    freq = str(FREQUENCY)
    cmd = ["perf", "record", "-q", "-F", freq, "-e", "cpu-clock", "-g", "-p", str(pid), "-o", str(data)]
    cmd += ["--", "sleep", f"{seconds}"]
    return Recording(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), data)


def shares(recording: Recording) -> KernelShare:
    """Wait for a `record` to end and count its samples."""
    recording.proc.wait()
    script = subprocess.run(
        ["perf", "script", "-i", str(recording.data), "-F", "ip,sym,dso"], capture_output=True, text=True, check=False
    ).stdout
    shutil.rmtree(recording.data.parent, ignore_errors=True)
    return count_samples(script)


def count_samples(script: str) -> KernelShare:
    """`perf script -F ip,sym,dso` output (one block of stack lines per sample, innermost first, blank-line
    separated) → the shares of kernel samples and of samples under `WAKE`."""
    samples = kernel = waking = 0
    for block in script.split("\n\n"):
        frames = [line.strip() for line in block.splitlines() if line.strip()]
        if not frames:
            continue
        samples += 1
        kernel += "[kernel.kallsyms]" in frames[0]
        waking += any(frame.split()[1:2] == [WAKE] for frame in frames)  # "address symbol (object)"
    if not samples:
        return KernelShare(0, 0.0, 0.0)
    return KernelShare(samples, kernel / samples, waking / samples)
