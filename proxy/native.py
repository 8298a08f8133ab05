"""The compiled request path: modules compiled with mypyc (`python -m proxy.native_build`, run by make) load in
place of their source, only while they were built from exactly that source.

Why compiled: after the protocol-level listener and write coalescing, pass-through spends its time in about 260
Python calls a request spread over the request steps (no function above 6% of a profile), so no single change
halves it; mypyc compiles the same typed modules to C, which side by side serves 1.2-1.3x the requests per second
for less CPU a request (README "Performance"). The source stays the one definition of every rule: the build is
kept out of the tree (`build/native/`), with a manifest holding each module's source hash, and a module whose
source changed since the build (an edit not rebuilt yet) makes the whole build unused, so a stale compiled module
can never run. Without a build (a machine with no C compiler, a wheel install) strangler runs as pure Python, with
the same behaviour. `STRANGLER_NATIVE=0` turns the build off for a run (the test suite runs both ways in CI).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent  # the source tree the modules' paths are relative to
BUILD_DIR = ROOT / "build" / "native"
MANIFEST = "manifest.json"
ENV = "STRANGLER_NATIVE"
FORMAT = 1  # the manifest's format: a build written by another format is not read


@dataclass(frozen=True, slots=True)
class Status:
    """Whether the compiled modules are in use, and why not when they are not (for the banner and
    `benchmarks.machine`)."""

    active: bool
    modules: int  # compiled modules in use (0 when inactive)
    reason: str  # "" when active; else what a person should know ("no build: run make native", ...)

    def describe(self) -> str:
        return f"compiled (mypyc, {self.modules} modules)" if self.active else f"pure Python ({self.reason})"


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ext_suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX") or "")


def read_manifest(build_dir: Path) -> Mapping[str, object] | None:
    try:
        loaded = json.loads((build_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def check(build_dir: Path = BUILD_DIR, root: Path = ROOT) -> tuple[dict[str, Path], str]:
    """The compiled files to load by module name, or {} and why not: no build, a build for another interpreter,
    or any module's source changed since the build."""
    manifest = read_manifest(build_dir)
    if manifest is None:
        return {}, "no build: run make native"
    if manifest.get("format") != FORMAT or manifest.get("ext_suffix") != ext_suffix():
        return {}, "built for another interpreter: run make native"
    modules = manifest.get("modules")
    support = manifest.get("support")
    if not isinstance(modules, dict) or not isinstance(support, dict):
        return {}, "unreadable build manifest: run make native"
    files: dict[str, Path] = {}
    try:
        entries = [(str(name), str(e["source"]), str(e["sha256"]), str(e["file"])) for name, e in modules.items()]
    except (KeyError, TypeError):
        return {}, "unreadable build manifest: run make native"
    for name, source, digest, file in entries:
        built = build_dir / file
        try:
            current = source_hash(root / source)
        except OSError:
            return {}, f"{source} is gone since the build: run make native"
        if current != digest:
            return {}, f"{source} changed since the build: run make native"
        if not built.is_file():
            return {}, f"{file} is missing from the build: run make native"
        files[name] = built
    for name, shared in support.items():  # mypyc's shared runtime module(s) the compiled modules import
        if not isinstance(shared, str) or not (build_dir / shared).is_file():
            return {}, f"{shared} is missing from the build: run make native"
        files[str(name)] = build_dir / shared
    return files, ""


def compiled_names(files: Mapping[str, Path]) -> set[str]:
    """The compiled modules among `check()`'s files: strangler's modules all live in packages, while mypyc's shared
    support modules are top-level."""
    return {name for name in files if "." in name}


class _CompiledFinder(importlib.abc.MetaPathFinder):
    """Finds the compiled modules of a checked build before the path finder finds their source."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self.files = dict(files)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


_status = Status(False, 0, "not checked")


def activate() -> Status:
    """Called once by `proxy/__init__`, before any compiled module can be imported: put a checked build first on
    the import path. Idempotent."""
    global _status
    if any(isinstance(finder, _CompiledFinder) for finder in sys.meta_path):
        return _status
    if os.environ.get(ENV, "1").strip().lower() in {"0", "no", "false", "off"}:
        _status = Status(False, 0, f"{ENV}=0")
        return _status
    files, reason = check()
    if not files:
        _status = Status(False, 0, reason)
        return _status
    sys.meta_path.insert(0, _CompiledFinder(files))
    _status = Status(True, len(compiled_names(files)), "")
    return _status


def status() -> Status:
    """Whether this process runs the compiled modules (see `activate`)."""
    return _status


def loaded_compiled(module: ModuleType) -> bool:
    """True when `module` was loaded from a compiled file (for tests and the benchmark's report)."""
    return isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)
