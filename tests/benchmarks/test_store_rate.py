"""`python -m benchmarks.store_rate` (the rows/s figure docs/scale.md cites) runs and prints its figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_store_rate_runs_for_one_second_and_prints_rows_and_megabytes_per_second(tmp_path: Path) -> None:
    """One second per measurement through the real StoreWriter and Store: both lines print a positive rows/s and
    MB/s, and no row is lost (the benchmark asserts it), with its store files in the given directory."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.store_rate", "--seconds", "1", "--path", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=50, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in ("writer path", "SQLite alone"):
        found = re.search(rf"store_rate: {name}\s+([\d,]+) rows/s\s+([\d.]+) MB/s", done.stdout)
        assert found is not None, done.stdout
        assert int(found.group(1).replace(",", "")) > 0
        assert float(found.group(2)) > 0
    assert list(tmp_path.iterdir()) == []  # its temporary store files are gone
