"""The compiled request path (`proxy.native`): a build is used only while it matches every source it was built from,
never for another interpreter, and `STRANGLER_NATIVE=0` turns it off; with a current build every module of
`proxy.native_build.MODULES` really loads compiled in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy import native
from proxy.native import FORMAT, MANIFEST, check, ext_suffix, source_hash
from proxy.native_build import MODULES, current
from tests.serve_process import ROOT

SUFFIX = ext_suffix()


def _fake_build(tmp_path: Path, *, suffix: str = SUFFIX) -> tuple[Path, Path]:
    """A source tree with one module and a build of it (the compiled file is a placeholder: check() reads no code)."""
    root, build = tmp_path / "src", tmp_path / "build"
    (root / "pkg").mkdir(parents=True)
    (build / "pkg").mkdir(parents=True)
    source = root / "pkg" / "mod.py"
    source.write_text("VALUE = 1\n")
    (build / "pkg" / f"mod{suffix}").write_bytes(b"")
    (build / f"group__mypyc{suffix}").write_bytes(b"")
    manifest = {
        "format": FORMAT,
        "ext_suffix": suffix,
        "modules": {"pkg.mod": {"source": "pkg/mod.py", "sha256": source_hash(source), "file": f"pkg/mod{suffix}"}},
        "support": {"group__mypyc": f"group__mypyc{suffix}"},
    }
    (build / MANIFEST).write_text(json.dumps(manifest))
    return root, build


@pytest.mark.unit
def test_a_current_build_names_every_compiled_file(tmp_path: Path) -> None:
    """check() names the compiled file of each module and the shared support module when every hash matches."""
    root, build = _fake_build(tmp_path)
    files, reason = check(build, root)
    assert reason == ""
    assert files == {"pkg.mod": build / "pkg" / f"mod{SUFFIX}", "group__mypyc": build / f"group__mypyc{SUFFIX}"}


@pytest.mark.unit
def test_a_source_edited_after_the_build_leaves_the_whole_build_unused(tmp_path: Path) -> None:
    """One edited source (not rebuilt yet) and no compiled module loads: the source is the one definition."""
    root, build = _fake_build(tmp_path)
    (root / "pkg" / "mod.py").write_text("VALUE = 2\n")
    assert check(build, root) == ({}, "pkg/mod.py changed since the build: run make native")


@pytest.mark.unit
def test_a_removed_source_or_compiled_file_leaves_the_build_unused(tmp_path: Path) -> None:
    """A source gone since the build, or a compiled file gone from it: pure Python, and the reason says which."""
    root, build = _fake_build(tmp_path)
    (build / "pkg" / f"mod{SUFFIX}").unlink()
    assert check(build, root) == ({}, f"pkg/mod{SUFFIX} is missing from the build: run make native")
    (root / "pkg" / "mod.py").unlink()
    assert check(build, root) == ({}, "pkg/mod.py is gone since the build: run make native")


@pytest.mark.unit
def test_no_build_or_a_build_for_another_interpreter_is_not_used(tmp_path: Path) -> None:
    """Without a manifest, or with one written by another interpreter (its extension suffix), nothing loads."""
    assert check(tmp_path / "none", tmp_path) == ({}, "no build: run make native")
    root, build = _fake_build(tmp_path, suffix=".cpython-399-x86_64-linux-gnu.so")
    assert check(build, root) == ({}, "built for another interpreter: run make native")
    (build / MANIFEST).write_text("{not json")
    assert check(build, root) == ({}, "no build: run make native")


def _probe(env: dict[str, str]) -> dict[str, object]:
    """In a fresh interpreter: the native status and which of MODULES loaded compiled."""
    program = (
        "import importlib, json; from proxy import native; from proxy.native_build import MODULES; "
        "mods = [importlib.import_module(m) for m in MODULES]; s = native.status(); "
        "print(json.dumps({'active': s.active, 'modules': s.modules, 'describe': s.describe(), "
        "'compiled': [m.__name__ for m in mods if native.loaded_compiled(m)]}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_strangler_native_0_runs_the_source() -> None:
    """STRANGLER_NATIVE=0: every request-path module is the Python source, and the status says why."""
    env = {k: v for k, v in os.environ.items() if k != native.ENV} | {native.ENV: "0", "PYTHONPATH": str(ROOT)}
    probe = _probe(env)
    assert probe == {"active": False, "modules": 0, "describe": "pure Python (STRANGLER_NATIVE=0)", "compiled": []}


def test_a_current_build_loads_every_request_path_module_compiled() -> None:
    """With the build make native wrote (current for these sources), each module of MODULES loads compiled."""
    if not current():
        pytest.skip("no current native build here (make native builds it; make test runs it first)")
    env = {k: v for k, v in os.environ.items() if k != native.ENV} | {"PYTHONPATH": str(ROOT)}
    probe = _probe(env)
    assert probe["active"] is True
    assert probe["modules"] == len(MODULES)
    assert probe["compiled"] == list(MODULES)
    assert probe["describe"] == f"compiled (mypyc, {len(MODULES)} modules)"


@pytest.mark.unit
def test_a_manifest_with_missing_keys_is_not_used(tmp_path: Path) -> None:
    """A manifest entry without its hash (a hand edit, a half-written file) is unreadable, not an import error."""
    root, build = _fake_build(tmp_path)
    manifest = json.loads((build / MANIFEST).read_text())
    del manifest["modules"]["pkg.mod"]["sha256"]
    (build / MANIFEST).write_text(json.dumps(manifest))
    assert check(build, root) == ({}, "unreadable build manifest: run make native")
