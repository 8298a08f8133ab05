"""constraints.txt, the versions `make test`, CI and the demo install: a pin for every requirement, inside the range
pyproject.toml declares, and the versions this test run is using."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def requirements() -> list[Requirement]:
    """pyproject.toml's requirements that apply here (its dependencies and the dev extra, markers evaluated)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found = [Requirement(text) for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]
    return [req for req in found if req.marker is None or req.marker.evaluate()]


def pins() -> dict[str, Version]:
    """constraints.txt as {canonical name: pinned version}; every line that is not a comment must be `name==version`."""
    found: dict[str, Version] = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        name, sep, pinned = text.partition("==")
        if not (sep and name and pinned):
            raise AssertionError(f"constraints.txt:{number}: expected name==version, got {line!r}")
        found[canonicalize_name(name)] = Version(pinned)
    return found


def test_every_requirement_is_pinned_inside_its_declared_range() -> None:
    """Each requirement of pyproject.toml has a pin in constraints.txt, and the pin is a version its range allows (a
    pin outside it would make pip refuse to install, or test a version users cannot get)."""
    locked = pins()
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in locked, f"constraints.txt pins no version of {req.name} (run make lock)"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={locked[name]}, outside pyproject.toml's {req} (run make lock)"
        )


def test_this_run_uses_the_pinned_versions() -> None:
    """The packages this suite runs with, and the pip that installed them, are the versions constraints.txt pins:
    what passed here is what CI installs (make test reinstalls whenever constraints.txt changes)."""
    locked = pins()
    assert Version(version("pip")) == locked["pip"], "pip differs from constraints.txt's (make .venv/.installed)"
    for req in requirements():
        name = canonicalize_name(req.name)
        try:
            installed = Version(version(req.name))
        except PackageNotFoundError:
            raise AssertionError(f"{req.name} is not installed (make .venv/.installed)") from None
        assert installed == locked[name], (
            f"{req.name} {installed} is installed, constraints.txt pins {locked[name]} (make .venv/.installed)"
        )
