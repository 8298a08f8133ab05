"""The exchange snapshots the core hands to listeners: frozen dataclasses, however their `__init__` is built."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from proxy.events import ExchangeStart, RequestSnapshot, ResponseSnapshot

pytestmark = pytest.mark.unit

SNAPSHOTS = [RequestSnapshot, ResponseSnapshot, ExchangeStart]


def _args(cls: type) -> list[object]:
    return [f"{f.name}-value" for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("cls", SNAPSHOTS)
def test_snapshots_are_built_field_by_field_and_stay_frozen(cls: type) -> None:
    """Positional and keyword construction give equal instances, every field set as
    given; assigning a field afterwards raises FrozenInstanceError."""
    args = _args(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    built = cls(*args)
    assert [getattr(built, n) for n in names] == args
    assert built == cls(**dict(zip(names, args, strict=True)))
    assert repr(built).startswith(f"{cls.__name__}({names[0]}=")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, names[0], "changed")
    assert dataclasses.replace(built, **{names[0]: "other"}) != built


def test_defaults_and_signature_are_the_dataclass_ones() -> None:
    """ResponseSnapshot's `error` defaults to None; missing required fields raise TypeError like any call."""
    snap = ResponseSnapshot("legacy", "legacy", 200, (), b"x", True, 0.5)
    assert snap.error is None
    assert list(inspect.signature(ResponseSnapshot).parameters) == [f.name for f in dataclasses.fields(snap)]
    with pytest.raises(TypeError):
        ResponseSnapshot("legacy", "legacy", 200)  # type: ignore[call-arg]
