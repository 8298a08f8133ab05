"""Contract drift (pure): shapes learned from JSON bodies, each field's drift kind, and the JSON Schema per side."""

from __future__ import annotations

from typing import Any

import orjson

from reports.contract import Shape, classify, compare_shapes, field_shapes, json_schema, learn_shape
from tests.reports.test_export import schema_errors


def _shape(docs: list[Any], weight: float = 1.0) -> Shape:
    return learn_shape((orjson.dumps(d), weight, False) for d in docs)


def _drifts(legacy: list[Any], new: list[Any]) -> dict[str, str]:
    return {f.path: f.drift for f in compare_shapes("r", _shape(legacy), _shape(new)).fields}


def test_added_removed_and_nested_fields_under_them_left_out() -> None:
    """A field only new has is added, one only legacy has removed; paths below a one-sided field are not listed."""
    drifts = _drifts([{"id": 1, "phone": "1"}] * 3, [{"id": 1, "contact": {"phone": "1"}}] * 3)
    assert drifts == {"$": "none", "$.id": "none", "$.phone": "removed", "$.contact": "added"}


def test_type_changes_including_array_to_object_but_not_integer_to_number() -> None:
    """A string that became a number, an array that became an object: type_changed; 1 vs 1.5 is one type."""
    legacy = [{"total": "10", "tags": ["a"], "price": 1}] * 3
    new = [{"total": 10, "tags": {"a": True}, "price": 1.5}] * 3
    drifts = _drifts(legacy, new)
    assert drifts["$.total"] == "type_changed"
    assert drifts["$.tags"] == "type_changed"
    assert drifts["$.price"] == "none"


def test_optionality_changed_when_a_field_is_sometimes_missing() -> None:
    """Always present on legacy, missing from some new bodies: optionality_changed, with the presence shown."""
    contract = compare_shapes("r", _shape([{"a": 1}] * 4), _shape([{"a": 1}, {"a": 1}, {}, {}]))
    (field,) = [f for f in contract.fields if f.path == "$.a"]
    assert field.drift == "optionality_changed"
    assert field.new is not None
    assert field.new.presence == 0.5


def test_enum_like_string_sets_that_changed() -> None:
    """Few distinct strings, each seen several times: an enum; a changed set is values_changed."""
    legacy = [{"status": s} for s in ("open", "closed") * 4]
    new = [{"status": s} for s in ("OPEN", "CLOSED") * 4]
    assert _drifts(legacy, new)["$.status"] == "values_changed"
    ids = _drifts([{"id": str(i)} for i in range(8)], [{"id": str(i + 100)} for i in range(8)])
    assert ids["$.id"] == "none"  # unique values are not an enum
    names = _drifts([{"n": "Ada L"}, {"n": "Bo K"}] * 4, [{"n": "Ada"}, {"n": "Bo"}] * 4)
    assert names["$.n"] == "none"  # words with spaces are not codes


def test_presence_of_array_item_fields_is_per_item() -> None:
    """A field in half the items of an array has presence 0.5."""
    fields = field_shapes(_shape([{"items": [{"q": 1}, {}]}] * 2))
    assert fields["$.items[*].q"].presence == 0.5
    assert fields["$.items[*]"].types == ("object",)


def test_weights_scale_presence_and_truncated_or_non_json_bodies_are_skipped() -> None:
    """A sampled body weighs 1/sample; truncated and non-JSON bodies are skipped and counted."""
    shape = learn_shape(
        [(b'{"a": 1}', 99.0, False), (b"{}", 1.0, False), (b'{"a"', 1.0, True), (b"<html>", 1.0, False)]
    )
    assert (shape.documents, shape.skipped) == (2, 2)
    assert field_shapes(shape)["$.a"].presence == 0.99


def test_classify_one_side_missing() -> None:
    """No shape on either side is none."""
    assert classify(None, None) == "none"


def test_json_schema_accepts_the_bodies_it_was_learned_from() -> None:
    """The schema has types, required for always-present members, items and enum; the learned bodies validate
    and a body lacking a required member does not."""
    docs = [{"id": i, "state": "ok" if i % 2 else "late", "items": [{"q": 1}], **({"note": "x"} if i else {})}
            for i in range(6)]  # fmt: skip
    schema = json_schema(_shape(docs), "t")
    assert schema["required"] == ["id", "items", "state"]
    assert schema["properties"]["state"]["enum"] == ["late", "ok"]
    assert schema["properties"]["items"]["items"]["required"] == ["q"]
    for doc in docs:
        assert schema_errors(doc, schema, schema) == []
    assert schema_errors({"state": "ok", "items": []}, schema, schema) == ["$: missing 'id'"]
