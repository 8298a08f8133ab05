"""The fixed-rate rows of `make bench`: latency at a steady open-loop rate through a legacy that takes 2 ms, directly,
through strangler on both listeners, and through strangler shadowing every request to a candidate 10x slower; and
the figures issue 13 sets for them (added p50, and the primary's p99 under the slow candidate against pass-through).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from pathlib import Path

from benchmarks.harness import backend_cmd, free_ports, process, routes_yaml, strangler_cmd
from benchmarks.load import Row, Runs, measure_rounds, open_loop, paired


def fixed_names(rate: float) -> tuple[str, str, str, str]:
    return (
        f"fixed {rate:.0f}/s: back end direct",
        f"fixed {rate:.0f}/s: strangler pass-through",
        f"fixed {rate:.0f}/s: strangler pass-through, --server aiohttp",
        f"fixed {rate:.0f}/s: strangler shadow, candidate 10x slower",
    )


def fixed_rows(args: argparse.Namespace) -> tuple[list[Row], Runs]:
    """Fixed-rate latency rows: a legacy that takes 2 ms, a candidate 10x slower (20 ms), all up at once."""
    rate, secs = args.rate, args.fixed_seconds
    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as t, contextlib.ExitStack() as stack:
        tmp = Path(t)
        legacy_p, slow_p, fpt, fpt_a, fpa, fpa_a, fsl, fsl_a = free_ports(8)
        stack.enter_context(process(backend_cmd(legacy_p, 2.0), legacy_p))
        stack.enter_context(process(backend_cmd(slow_p, 20.0), slow_p))
        cfg = routes_yaml(tmp, fpt, fpt_a, legacy_p, slow_p, "legacy", "fpass")
        stack.enter_context(process(strangler_cmd(cfg), fpt, log=tmp / "fpass.log"))
        cfg = routes_yaml(tmp, fpa, fpa_a, legacy_p, slow_p, "legacy", "fpass_aiohttp")
        stack.enter_context(process(strangler_cmd(cfg, "--server", "aiohttp"), fpa, log=tmp / "fpass_aiohttp.log"))
        cfg = routes_yaml(tmp, fsl, fsl_a, legacy_p, slow_p, "shadow", "fslow")
        stack.enter_context(process(strangler_cmd(cfg), fsl, log=tmp / "fslow.log"))
        fixed = dict(zip(fixed_names(rate), (legacy_p, fpt, fpa, fsl), strict=True))
        for port in fixed.values():
            asyncio.run(open_loop(port, rate, 1.0))  # warm-up
        return measure_rounds(fixed, args.rounds, lambda port: asyncio.run(open_loop(port, rate, secs)))


def fixed_ratios(runs: Runs, rate: float) -> dict[str, float]:
    """The fixed-rate figures, each the median of per-round figures; prints the p99 ratio of every round too."""
    f_be, f_pt, f_pa, f_sl = fixed_names(rate)
    ratios = {
        "added p50 ms at fixed rate (target <= 0.5)": paired(runs, f_pt, f_be, lambda x, y: x[1] - y[1]),
        "added p50 ms at fixed rate, aiohttp listener": paired(runs, f_pa, f_be, lambda x, y: x[1] - y[1]),
        "p99 slow-candidate shadow / pass-through (target <= 1.05)": paired(runs, f_sl, f_pt, lambda x, y: x[2] / y[2]),
    }
    print(
        "  rounds of p99 slow-candidate shadow / pass-through: "
        + ", ".join(f"{x[2] / y[2]:.2f}" for x, y in zip(runs[f_sl], runs[f_pt], strict=True))
    )
    return ratios
