"""The exchange values the core hands to listeners: immutable NamedTuples, however they are built."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from proxy.events import ExchangeStart, RequestSnapshot, ResponseSnapshot
from proxy.forwarding import ForwardResult
from proxy.notify import notify_done

pytestmark = pytest.mark.unit

SNAPSHOTS = [RequestSnapshot, ResponseSnapshot, ExchangeStart]


def _args(cls: Any) -> list[object]:
    return [f"{name}-value" for name in cls._fields]


@pytest.mark.parametrize("cls", SNAPSHOTS)
def test_snapshots_are_built_field_by_field_and_stay_immutable(cls: Any) -> None:
    """Positional, keyword and tuple.__new__ construction give equal instances, every field set as given;
    assigning a field afterwards raises AttributeError."""
    args = _args(cls)
    names: tuple[str, ...] = cls._fields
    built = cls(*args)
    assert [getattr(built, n) for n in names] == args
    assert built == cls(**dict(zip(names, args, strict=True)))
    assert built == tuple.__new__(cls, args)
    assert type(tuple.__new__(cls, args)) is cls
    assert repr(built).startswith(f"{cls.__name__}({names[0]}=")
    with pytest.raises(AttributeError):
        setattr(built, names[0], "changed")
    assert built._replace(**{names[0]: "other"}) != built


def test_defaults_and_signature_are_the_declared_ones() -> None:
    """ResponseSnapshot's `error` defaults to None; missing required fields raise TypeError like any call."""
    snap = ResponseSnapshot("legacy", "legacy", 200, (), b"x", True, 0.5)
    assert snap.error is None
    assert list(inspect.signature(ResponseSnapshot).parameters) == list(ResponseSnapshot._fields)
    with pytest.raises(TypeError):
        ResponseSnapshot("legacy", "legacy", 200)  # type: ignore[call-arg]


def test_observers_hear_the_forward_result_as_the_constructed_snapshot() -> None:
    """`proxy.notify.notify_done` (which builds the snapshot without the NamedTuple's __new__) hands every observer
    a ResponseSnapshot equal to the one built by keywords from the same forward result."""
    heard: list[ResponseSnapshot] = []

    class Observer:
        def primary_done(self, primary: ResponseSnapshot) -> None:
            heard.append(primary)

    result = ForwardResult(200, 200, None, (("Content-Type", "text/plain"),), b"ok", True, 0.25)
    expected = ResponseSnapshot(
        side="new", upstream="u", status=200, headers=(("Content-Type", "text/plain"),), body=b"ok",
        body_complete=True, latency=0.25, error=None,
    )  # fmt: skip
    notify_done([Observer(), Observer()], "new", "u", result)
    assert [type(h) for h in heard] == [ResponseSnapshot, ResponseSnapshot]
    assert heard == [expected, expected]


def test_decoded_snapshot_reads_the_headers_the_core_passed_undecoded() -> None:
    """`ResponseSnapshot.decoded()` turns raw header pairs into the decoded ones (and is the snapshot itself when
    nothing is raw), so an observer reads the same headers however the core passed them."""
    plain = ResponseSnapshot("legacy", "u", 200, (("Content-Type", "text/plain"),), b"ok", True, 0.1)
    assert plain.decoded() is plain
    raw = plain._replace(headers=(), raw_headers=((b"Content-Type", b"text/plain"),))
    assert raw.decoded() == plain
