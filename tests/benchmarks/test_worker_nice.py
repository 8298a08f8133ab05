"""benchmarks.worker_nice, run short: every setup is measured in every round and printed against pass-through."""

from __future__ import annotations

import pytest

from benchmarks.worker_nice import main


@pytest.mark.slow
def test_a_short_run_prints_each_setup_against_pass_through(capsys: pytest.CaptureFixture[str]) -> None:
    """One round of half a second at 50 req/s: the back end, pass-through and one shadow setup per nice value each
    get a row, and pass-through against itself is exactly 1."""
    assert main(["--nice", "0,10", "--rounds", "1", "--seconds", "0.5", "--rate", "50", "--pause", "0.1"]) == 0
    rows = {line[:20].strip(): line[20:].split() for line in capsys.readouterr().out.splitlines()[3:]}
    assert list(rows) == ["back end direct", "pass-through", "shadow, nice 0", "shadow, nice 10"]
    assert rows["pass-through"][2] == "1.000"
