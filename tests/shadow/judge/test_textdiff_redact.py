"""Line signatures hold page text: they are redacted like difference values before a record is stored."""

from __future__ import annotations

from proxy.config.model import Redact
from shadow.redact import Redactor
from shadow.values import FieldDiff
from tests.shadow.judge.test_textdiff import compare_text

KEY = b"k" * 32


def test_text_groups_are_scrubbed_of_secrets() -> None:
    """A changed line carrying `api_key=...` is grouped without the secret, in the differences and in the exact
    fields alike, so both count under one group; JSON paths are left as they are."""
    redactor = Redactor(KEY, Redact())
    result = compare_text("Total: 3\nhook /cb?api_key=sk_live_legacy\n", "Total: 4\nhook /cb?api_key=sk_live_new\n")
    stored = [redactor.redact_difference(d) for d in result.differences]
    groups = [d.group for d in stored]
    assert all("sk_live" not in g for g in groups)
    assert groups[0] == 'text: "Total: #"'
    assert groups[1].startswith('text: "hook /cb?api_key=<redacted:')
    assert [f.group for f in redactor.fields(result.fields)] == groups
    assert redactor.group("$.items[*].api_key") == "$.items[*].api_key"


def test_fields_that_become_one_group_are_merged() -> None:
    """Two groups the redactor makes equal are one field, their counts added and kinds merged."""
    redactor = Redactor(KEY, Redact())
    merged = redactor.fields((FieldDiff('text: "x?token=a"', "changed", 2), FieldDiff('text: "x?token=a"', "added", 1)))
    assert len(merged) == 1
    assert (merged[0].kind, merged[0].count) == ("mixed", 3)
    assert merged[0].group.startswith('text: "x?token=<redacted:')
