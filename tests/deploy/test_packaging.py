"""`pip install .` (what the container file runs) installs every package of the source tree, not only the top ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("proxy", "shadow", "reports", "cli")


def source_packages() -> set[str]:
    """Every directory under the top-level packages that holds an __init__.py, as a dotted name."""
    found = set()
    for top in PACKAGES:
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    return found


@pytest.mark.slow
def test_a_build_of_the_project_holds_every_package(tmp_path: Path) -> None:
    """setuptools' build (the step `pip install .` runs) copies every package and sub-package, with its modules."""
    command = [sys.executable, "-c", "import setuptools; setuptools.setup()", "build", "--build-base", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lib = tmp_path / "lib"
    built = {".".join(init.parent.relative_to(lib).parts) for init in lib.rglob("__init__.py")}
    assert built == source_packages()
    modules = {p.relative_to(ROOT).as_posix() for top in PACKAGES for p in (ROOT / top).rglob("*.py")}
    assert {p.relative_to(lib).as_posix() for p in lib.rglob("*.py")} == modules
    assert (lib / "proxy" / "py.typed").exists()
