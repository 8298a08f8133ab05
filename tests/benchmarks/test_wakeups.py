"""Tests for benchmarks.wakeups: perf script's samples are counted by their innermost frame (kernel or not) and by
whether the kernel was waking a peer (sock_def_readable anywhere in the stack)."""

from __future__ import annotations

from benchmarks.wakeups import count_samples

# Three samples as `perf script -F ip,sym,dso` prints them: Python code; a send that woke the receiver (innermost the
# irq restore under sock_def_readable); a read in the kernel.
SCRIPT = """
\t           fb704 _PyEval_EvalFrameDefault (/usr/lib/libpython3.11.so.1.0)
\t    7f7a049d2380 [unknown] ([unknown])

\tffffffff82251fb9 _raw_spin_unlock_irqrestore ([kernel.kallsyms])
\tffffffff81e7c67e sock_def_readable ([kernel.kallsyms])
\tffffffff82078159 tcp_rcv_established ([kernel.kallsyms])
\t          12ab34 __GI___libc_write (/usr/lib/libc.so.6)

\tffffffff81e0c0de tcp_recvmsg_locked ([kernel.kallsyms])
\t          12ab99 __GI___libc_read (/usr/lib/libc.so.6)
"""


def test_samples_are_split_into_kernel_and_waking_a_peer() -> None:
    """One of three samples runs Python, two are in the kernel, one of them under sock_def_readable."""
    found = count_samples(SCRIPT)
    assert found.samples == 3
    assert found.kernel == 2 / 3
    assert found.waking == 1 / 3


def test_a_function_whose_name_only_ends_like_the_wake_is_not_counted() -> None:
    """Only the wake function itself counts, not another whose name contains it."""
    found = count_samples("\tffffffff81 trace_sock_def_readable ([kernel.kallsyms])\n")
    assert (found.samples, found.waking) == (1, 0.0)


def test_no_samples() -> None:
    """An empty recording (the process was idle, or perf found nothing) gives zeros, not a division by zero."""
    assert count_samples("") == count_samples("\n\n")
    assert count_samples("").samples == 0


def test_a_longer_name_that_starts_like_the_wake_is_not_counted() -> None:
    """sock_def_readable_x is another function."""
    found = count_samples("\tffffffff81 sock_def_readable_x ([kernel.kallsyms])\n")
    assert (found.samples, found.waking) == (1, 0.0)
