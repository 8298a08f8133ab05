"""The deploy and scaling documents are linked from README, and their relative links lead to files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "deploy/README.md", "docs/scale.md")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_readme_links_the_deploy_recipes_and_the_scaling_plan() -> None:
    """README links deploy/README.md and docs/scale.md."""
    links = set(LINK.findall((ROOT / "README.md").read_text(encoding="utf-8")))
    assert {"deploy/README.md", "docs/scale.md"} <= links


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_lead_to_existing_files(doc: str) -> None:
    """Every relative link in the document names a file or directory of the repository."""
    path = ROOT / doc
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{doc}: broken link {target}"
