"""The differences stored past the per-pair cap do not depend on the interpreter's string-hash seed: two processes
(the shadow worker and an in-process listener, or two workers) keep the same rows for the same pair."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# 150 elements of an order-blind array, each changed: more differences than are stored, with a removed and an added
# row at the same concrete path, whose order deepdiff reports by set iteration (which the hash seed decides).
SCRIPT = r"""
import json, orjson
from proxy.config.model import Compare
from proxy.events import ResponseSnapshot
from shadow.judge.compare import compare_responses
legacy = {"rows": [{"i": i, "v": i} for i in range(150)]}
new = {"rows": [{"i": i, "v": i + 1} for i in range(150)]}
def snap(side, doc):
    return ResponseSnapshot(side, side, 200, (("content-type", "application/json"),), orjson.dumps(doc), True, 0.0)
result = compare_responses(snap("legacy", legacy), snap("new", new), Compare(ignore_order=True))
print(json.dumps([[d.path, d.kind, d.legacy, d.new] for d in result.differences]))
"""


def _stored(seed: str) -> list[list[str | None]]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_stored_differences_are_the_same_under_every_hash_seed() -> None:
    """Past the cap, the same rows are kept, in the same order, whatever PYTHONHASHSEED the process has."""
    runs = [_stored(seed) for seed in ("0", "1", "2", "3", "4", "5")]
    assert len(runs[0]) == 100
    assert {"added", "removed"} <= {kind for _, kind, _, _ in runs[0]}
    for other in runs[1:]:
        assert other == runs[0]
