"""``wire``'s plans: what a type says is decided once and kept, with the results and the
errors of deciding it for every value (the module's contract before plans were kept)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import threading
from collections.abc import Mapping
from typing import Literal

import pytest

from medsecrets.errors import InvalidRequest
from medsecrets.sensitive import SecretFields, Sensitive
from medsecrets.wire import from_wire, to_wire


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """A dataclass that holds itself: planned only as far as values go."""

    name: str
    children: tuple[Node, ...] = ()
    parent: Node | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Odd:
    """A field whose hint has no wire form, next to one that has."""

    size: int
    moment: dt.date | None = None


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass(frozen=True, slots=True)
class Everything:
    """One field of every kind a wire form has."""

    flag: bool
    count: int
    ratio: float
    text: str
    when: dt.datetime
    fields: SecretFields
    token: Sensitive[str]
    mode: Literal["a", "b"]
    tags: Mapping[str, str]
    items: frozenset[str]
    _hidden: int = 0


def test_a_dataclass_that_holds_itself_reads_and_writes() -> None:
    data = {"name": "root", "children": [{"name": "leaf", "parent": {"name": "root"}}]}
    node = from_wire(Node, data)
    assert node.children[0].parent == Node("root")
    assert to_wire(node) == {
        "name": "root",
        "children": [
            {
                "name": "leaf",
                "children": [],
                "parent": {"name": "root", "children": [], "parent": None},
            }
        ],
        "parent": None,
    }
    with pytest.raises(
        InvalidRequest, match=r"^Node\.children\[0\]\.parent\.name: expected a string$"
    ):
        from_wire(Node, {"name": "root", "children": [{"name": "x", "parent": {"name": 1}}]})


def test_a_hint_without_a_wire_form_fails_only_when_such_a_value_is_read() -> None:
    for _ in range(2):  # planned the first time, kept the second: the same answers
        assert from_wire(Odd, {"size": 3}) == Odd(3)
        assert from_wire(Odd, {"size": 3, "moment": None}) == Odd(3)
        with pytest.raises(TypeError, match="cannot read"):
            from_wire(Odd, {"size": 3, "moment": "2026-01-01"})
        with pytest.raises(InvalidRequest, match=r"^Odd: missing field 'size'$"):
            from_wire(Odd, {})


def test_a_type_without_a_wire_form_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(TypeError, match="cannot put date on the wire"):
            to_wire(Odd(1, dt.date(2026, 1, 1)))


def test_every_kind_reads_and_writes_as_before_plans_were_kept() -> None:
    when = dt.datetime(2026, 12, 6, 13, 0, tzinfo=dt.UTC)
    data = {
        "flag": True,
        "count": 2,
        "ratio": 1,
        "text": "t",
        "when": when.isoformat(),
        "fields": {"k": "v"},
        "token": "s3cret",
        "mode": "b",
        "tags": {"a": "b"},
        "items": ["y", "x", "y"],
        "ignored": 1,
    }
    for _ in range(2):
        value = from_wire(Everything, data)
        assert value.ratio == 1.0 and isinstance(value.ratio, float)
        assert value.when == when and value.items == frozenset({"x", "y"})
        assert value.token.reveal() == "s3cret" and value.fields.to_dict() == {"k": "v"}
        wire = to_wire(value)
        assert wire == {
            **{k: v for k, v in data.items() if k != "ignored"},
            "ratio": 1.0,
            "items": ["x", "y"],
        }
    assert to_wire([Colour.RED, Level.HIGH, {"k": (1, 2)}, {3, 1}]) == [
        "red",
        3,
        {"k": [1, 2]},
        [1, 3],
    ]
    assert to_wire(Sensitive(b"\x01\xff")) == "01ff"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"count": True}, "Everything.count: expected an integer"),
        ({"flag": 1}, "Everything.flag: expected true or false"),
        ({"ratio": "1"}, "Everything.ratio: expected a number"),
        ({"when": "soon"}, "Everything.when: expected an ISO 8601 time"),
        ({"fields": {"k": 1}}, "Everything.fields: expected an object of strings"),
        ({"token": 5}, "Everything.token: expected a string"),
        ({"mode": "c"}, "Everything.mode: expected 'a' or 'b'"),
        ({"tags": {"a b": 1}}, "Everything.tags['a b']: expected a string"),
        ({"items": "x"}, "Everything.items: expected a list"),
        ({"items": ["x", 2]}, "Everything.items[1]: expected a string"),
    ],
)
def test_a_value_that_does_not_fit_is_named_where_it_is(
    data: dict[str, object], message: str
) -> None:
    good = {
        "flag": True,
        "count": 2,
        "ratio": 1.5,
        "text": "t",
        "when": "2026-12-06T13:00:00+00:00",
        "fields": {},
        "token": "s",
        "mode": "a",
        "tags": {},
        "items": [],
    }
    for _ in range(2):
        with pytest.raises(InvalidRequest) as caught:
            from_wire(Everything, {**good, **data})
        assert str(caught.value) == message
    with pytest.raises(InvalidRequest, match=r"^Everything: expected an object$"):
        from_wire(Everything, [good])


def test_threads_planning_at_once_all_read_every_field() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Fresh:  # never planned before this test
        a: int
        b: str
        c: tuple[int, ...] = ()

    barrier = threading.Barrier(8)
    results: list[object] = []

    def read() -> None:
        barrier.wait()
        for _ in range(50):
            results.append(from_wire(Fresh, {"a": 1, "b": "x", "c": [2]}))
            try:
                from_wire(Fresh, {"a": 1})
            except InvalidRequest as exc:
                results.append(str(exc))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(Fresh(1, "x", (2,))) == 400
    assert results.count("Fresh: missing field 'b'") == 400


@dataclasses.dataclass(frozen=True, slots=True)
class FloatFirst:
    """A union read in its own order."""

    value: float | int
    either: str | int = ""


@dataclasses.dataclass(frozen=True, slots=True)
class IntFirst:
    """The same members as ``FloatFirst``'s, in the other order (equal hints to typing)."""

    value: int | float
    either: int | str = 0


def test_a_union_reads_in_its_own_order_whichever_was_planned_first() -> None:
    assert (float | int) == (int | float)  # why plans are kept by identity, not equality
    for _ in range(2):
        assert type(from_wire(IntFirst, {"value": 1}).value) is int
        assert type(from_wire(FloatFirst, {"value": 1}).value) is float
        with pytest.raises(InvalidRequest, match=r"^FloatFirst\.either: expected a string$"):
            from_wire(FloatFirst, {"value": 1, "either": []})
        with pytest.raises(InvalidRequest, match=r"^IntFirst\.either: expected an integer$"):
            from_wire(IntFirst, {"value": 1, "either": []})


def test_an_unhashable_hint_is_refused_as_any_hint_without_a_wire_form() -> None:
    from typing import Annotated

    for _ in range(2):
        with pytest.raises(TypeError, match="cannot read"):
            from_wire(Annotated[int, {}], 3)  # type: ignore[arg-type]


def test_values_nest_as_deep_on_the_wire_as_before_plans_were_kept() -> None:
    # two frames a level (to_wire and the container's writer), as the old recursion took:
    # 400 levels fit under the default recursion limit with pytest's own frames; three
    # frames a level would not
    deep: object = "leaf"
    for _ in range(400):
        deep = [{"k": deep}] if isinstance(deep, str) else {"k": deep}
    wired = to_wire(deep)
    for _ in range(399):
        assert isinstance(wired, dict)
        wired = wired["k"]


def test_the_plan_tables_stay_bounded() -> None:
    from medsecrets import wire

    for _ in range(wire.MAX_PLANS + 10):  # a hint built afresh for every call
        assert from_wire(list[int], [1]) == (1,)
    assert len(wire._READERS) <= wire.MAX_PLANS
    assert from_wire(Node, {"name": "n"}) == Node("n")  # plain readers still there
    for n in range(wire.MAX_PLANS + 10):  # a type made at run time for every value
        kind = dataclasses.make_dataclass(f"Made{n}", [("x", int)], frozen=True)
        assert to_wire(kind(n)) == {"x": n}
    assert len(wire._WRITERS) <= wire.MAX_PLANS
