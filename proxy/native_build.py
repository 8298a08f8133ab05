"""Build the compiled request path (`proxy.native`) with mypyc into `build/native/`: `python -m proxy.native_build`
(make runs it before the tests, the demo and the benchmarks, and it does nothing while the build is current).

The modules compiled are the request path's (`MODULES`): the steps every proxied request and every shadow copy run.
Modules whose classes extend aiohttp's slotted classes (the client connection and listener, aiohttp's request
handler, the coalescing writer, the response classes) and the ones a request never reaches stay Python. A module here
must keep its annotations true at run time: compiled code checks declared types where the interpreter does not
(`proxy.upstream.h1_protocol.ResponseMessage` is declared by what is read for that reason, and `shadow.store.types`
stays Python because old stores hold NULL where its rows declare `str`).

A failed build leaves strangler on pure Python and says so; `--strict` makes it an error (CI uses it, so the suite it
runs is known to run compiled).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from proxy.native import BUILD_DIR, FORMAT, MANIFEST, ROOT, check, compiled_names, ext_suffix, source_hash

MODULES: tuple[str, ...] = (
    "proxy.access.lines",
    "proxy.access.log",
    "proxy.canary",
    "proxy.clock",
    "proxy.coalesce",
    "proxy.events",
    "proxy.exchange",
    "proxy.forwarding",
    "proxy.handler",
    "proxy.header_names",
    "proxy.headers",
    "proxy.jsonpath",
    "proxy.methods",
    "proxy.metrics",
    "proxy.modes",
    "proxy.notify",
    "proxy.paths",
    "proxy.query_redact",
    "proxy.routing",
    "proxy.tasks",
    "proxy.templates",
    "proxy.websocket",
    "proxy.upstream._h1",
    "proxy.upstream.h1_protocol",
    "proxy.upstream.request_head",
    "proxy.upstream.response",
    "proxy.upstream.transport",
    "proxy.upstream.whole",
    "shadow.fetch",
    "shadow.judging",
    "shadow.plan",
    "shadow.records",
    "shadow.redact",
    "shadow.runner",
    "shadow.values",
    "shadow.worker.process",
    "shadow.worker.wire",
    "shadow.worker.bridge",
    "shadow.store.rows",
    "shadow.judge.bodies",
    "shadow.judge.compare",
    "shadow.judge.jsondiff",
    "shadow.judge.jsonpath",
    "shadow.judge.noise",
    "shadow.judge.origins",
    "shadow.judge.normalize",
    "shadow.judge.seqmatch",
    "shadow.judge.textdiff",
    "shadow.judge.textlines",
    "shadow.judge.unordered",
)
GROUP = "strangler_native"  # mypyc's shared module for the group: strangler_native__mypyc


def source_of(module: str) -> str:
    return module.replace(".", "/") + ".py"


def current(build_dir: Path = BUILD_DIR) -> bool:
    """The build exists, matches every source, and compiles exactly `MODULES`."""
    files, _ = check(build_dir)
    return bool(files) and compiled_names(files) == set(MODULES)


def build(build_dir: Path = BUILD_DIR) -> int:
    """Compile `MODULES` into a fresh directory, then put it in place of `build_dir` with its manifest."""
    from mypyc.build import mypycify
    from setuptools import setup

    work = build_dir.with_name(build_dir.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    sources = {module: source_of(module) for module in MODULES}
    before = {module: source_hash(ROOT / path) for module, path in sources.items()}
    cwd = os.getcwd()
    os.chdir(ROOT)  # mypyc names modules by their path from here
    try:
        extensions = mypycify(list(sources.values()), opt_level="3", target_dir=str(work / "c"), group_name=GROUP)
        setup(
            name="strangler-native",
            ext_modules=extensions,
            script_args=[
                "--quiet",
                "build_ext",
                "--build-lib",
                str(work / "lib"),
                "--build-temp",
                str(work / "obj"),
                "--parallel",
                str(os.cpu_count() or 1),
            ],
        )
    finally:
        os.chdir(cwd)
    lib = work / "lib"
    suffix = ext_suffix()
    modules = {}
    for module, path in sources.items():
        if source_hash(ROOT / path) != before[module]:
            raise RuntimeError(f"{path} changed during the build: build again")
        built = Path(*module.split(".")).with_suffix("")
        file = str(built) + suffix
        if not (lib / file).is_file():
            raise RuntimeError(f"mypyc wrote no {file}")
        modules[module] = {"source": path, "sha256": before[module], "file": file}
    support = {f"{GROUP}__mypyc": f"{GROUP}__mypyc{suffix}"}
    for file in support.values():
        if not (lib / file).is_file():
            raise RuntimeError(f"mypyc wrote no {file}")
    manifest = {
        "format": FORMAT,
        "ext_suffix": suffix,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "modules": modules,
        "support": support,
    }
    (lib / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(build_dir, ignore_errors=True)
    lib.rename(build_dir)
    shutil.rmtree(work, ignore_errors=True)
    return len(modules)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="build even when the build is current")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the build fails (default: say so, exit 0)")
    args = ap.parse_args(argv)
    if not args.force and current():
        print(f"native build current: {len(MODULES)} modules in {BUILD_DIR.relative_to(ROOT)}")
        return 0
    started = time.monotonic()
    try:
        count = build()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - setuptools exits on a compiler error
        print(f"native build failed ({exc}): strangler runs as pure Python", file=sys.stderr)
        return 1 if args.strict else 0
    print(f"native build: {count} modules compiled in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
