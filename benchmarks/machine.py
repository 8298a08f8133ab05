"""What machine a benchmark ran on, recorded beside its figures: the same code's ratios move with the machine kind.

Runs on two kinds of 2-core machine gave pass-through / nginx 0.22–0.26 on one and 0.15 on the other, and shadow /
pass-through the other way round, because interpreted code and nginx's C do not slow down alike. So `make bench`
prints and stores the CPU, the kernel, the Python build and one calibration figure (a plain Python loop's time per
step, best of three), by which two results files can be told apart before their ratios are compared.
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
import time
from pathlib import Path

from proxy import native


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def python_build() -> str:
    """The interpreter's version and the configure options that change its speed (PGO, LTO)."""
    args = str(sysconfig.get_config_var("CONFIG_ARGS") or "")
    flags = [f for f in ("--enable-optimizations", "--with-lto", "--enable-shared") if f in args]
    return f"{platform.python_implementation()} {platform.python_version()} ({', '.join(flags) or 'no PGO/LTO flags'})"


def loop_ns_per_step(steps: int = 2_000_000, repeats: int = 3) -> float:
    """Nanoseconds per step of `for i in range(n): s += i`, best of `repeats`: the interpreter's speed here."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        s = 0
        for i in range(steps):
            s += i
        best = min(best, time.perf_counter() - started)
    return best / steps * 1e9


def describe() -> dict[str, object]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": python_build(),
        "python_loop_ns_per_step": round(loop_ns_per_step(), 1),
        "executable": sys.executable,
        # The code measured: the compiled request path or the source (proxy.native; strangler's processes start
        # from this tree with this environment, so they run what this process would).
        "code": native.status().describe(),
    }


def summary(machine: dict[str, object]) -> str:
    return (
        f"machine: {machine['cpu']}, {machine['cores']} cores, kernel {machine['kernel']}; {machine['python']}; "
        f"a Python loop step {machine['python_loop_ns_per_step']} ns; "
        f"strangler's code {machine.get('code', 'unrecorded')}"
    )


if __name__ == "__main__":
    print(summary(describe()))
