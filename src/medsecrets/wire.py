"""The JSON wire form of medsecrets' value types, shared by the API and the SDK.

``to_wire(value)`` turns a frozen dataclass (and what it holds: datetimes,
tuples, mappings, ``SecretFields``, ``Sensitive``) into JSON-ready data;
``from_wire(cls, data)`` rebuilds an instance of ``cls`` from it, driven by the
dataclass's type hints, and raises ``InvalidRequest`` naming the field when the
data does not fit. This is the transport edge: ``SecretFields`` and
``Sensitive`` values are revealed here and only here.

Both are planned once per type and the plan kept (``_writer`` per runtime type,
``_reader`` per type hint): what a value's type says is decided once, not on every
value (every request body and every response goes through here).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from medsecrets.errors import InvalidRequest, quote
from medsecrets.sensitive import SecretFields, Sensitive

__all__ = ["MAX_PLANS", "from_wire", "to_wire"]

JSON = None | bool | int | float | str | list["JSON"] | dict[str, "JSON"]
T = TypeVar("T")


_SCALARS = frozenset({type(None), bool, int, float, str})

MAX_PLANS = 4096
"""The most plans each table keeps: one is emptied when full (types made at run time, or
hints built afresh for each call, would otherwise grow it without end)."""

_Writer = Callable[[Any], JSON]
_Reader = Callable[[object, str], object]


def to_wire(value: object) -> JSON:
    """JSON-ready form of ``value`` (dataclass, datetime, sequence, mapping, scalar)."""
    kind = type(value)
    if kind in _SCALARS:
        return value  # type: ignore[return-value]
    writer = _WRITERS.get(kind)
    if writer is None:
        if len(_WRITERS) >= MAX_PLANS:
            _WRITERS.clear()
        writer = _WRITERS[kind] = _writer(kind)
    return writer(value)


def _same(value: Any) -> JSON:
    return value  # type: ignore[no-any-return]


def _time_text(value: dt.datetime) -> JSON:
    return value.isoformat()


def _fields_dict(value: SecretFields) -> JSON:
    return value.to_dict()  # type: ignore[return-value]


def _revealed(value: Sensitive[Any]) -> JSON:
    revealed = value.reveal()
    return revealed if isinstance(revealed, str) else revealed.hex()


# Loops, not comprehensions, in the writers of containers: a comprehension is a frame of its
# own on 3.11, and a nesting level then costs three frames instead of two (``to_wire`` and
# the writer): values nested as deep as before plans were kept still go on the wire.


def _mapping(value: Mapping[object, object]) -> JSON:
    wired: dict[str, JSON] = {}
    for k, v in value.items():
        wired[str(k)] = to_wire(v)
    return wired


def _sequence(value: tuple[object, ...] | list[object]) -> JSON:
    wired: list[JSON] = []
    for v in value:
        wired.append(to_wire(v))
    return wired


def _set(value: frozenset[Any] | set[Any]) -> JSON:
    return _sequence(sorted(value))


_WRITERS: dict[type, _Writer] = {}
"""The writer of each runtime type met so far (``_writer``)."""


def _writer(kind: type) -> _Writer:
    """How a value of (exactly) type ``kind`` goes on the wire; a ``TypeError`` raiser if it
    cannot. Dataclasses give their fields not ``_``-prefixed."""
    if dataclasses.is_dataclass(kind):
        names = tuple(f.name for f in dataclasses.fields(kind) if not f.name.startswith("_"))

        def fields(value: object) -> JSON:
            wired: dict[str, JSON] = {}
            for name in names:
                wired[name] = to_wire(getattr(value, name))
            return wired

        return fields
    if issubclass(kind, bool | int | float | str):  # subclasses (enums)
        return _same
    if issubclass(kind, dt.datetime):
        return _time_text
    if issubclass(kind, SecretFields):
        return _fields_dict
    if issubclass(kind, Sensitive):
        return _revealed
    if issubclass(kind, Mapping):
        return _mapping
    if issubclass(kind, frozenset | set):
        return _set
    if issubclass(kind, tuple | list):
        return _sequence

    def refuse(value: object) -> JSON:
        raise TypeError(f"cannot put {kind.__name__} on the wire")

    return refuse


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_wire(cls: type[T], data: object, *, where: str = "") -> T:
    """An instance of dataclass ``cls`` rebuilt from ``data`` (see module docstring)."""
    return typing.cast(T, _reader(cls)(data, where or cls.__name__))


def _reader(tp: object) -> _Reader:
    """The reader of type hint ``tp`` (``_plan_reader``), planned once per hint object.

    Kept by identity, not by equality: typing finds ``int | float`` equal to ``float | int``
    (and ``Literal`` hints alike), yet a union reads with its members in their order, and a
    hint may not be hashable at all."""
    found = _READERS.get(id(tp))
    if found is not None and found[0] is tp:
        return found[1]
    reader = _plan_reader(tp)
    if len(_READERS) >= MAX_PLANS:
        _READERS.clear()
        _READERS.update(_PLAIN_READERS)
    _READERS[id(tp)] = (tp, reader)  # the hint kept alive with it: its id stays its own
    return reader


def _fail(where: str, expected: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: expected {expected}")


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_./-]{1,64}")


def _member(where: str, key: str) -> str:
    """Where a mapping's member is, for a message: ``where.key``, or ``where['key']``
    quoted (cut, control characters replaced) when the client's key is not plain."""
    return f"{where}.{key}" if _PLAIN_KEY.fullmatch(key) else f"{where}[{quote(key)}]"


def _any(data: object, where: str) -> object:
    return data


def _secret_fields(data: object, where: str) -> object:
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise _fail(where, "an object of strings")
    return SecretFields(data)


def _sensitive(data: object, where: str) -> object:
    if not isinstance(data, str):
        raise _fail(where, "a string")
    return Sensitive(data)


def _datetime(data: object, where: str) -> object:
    if not isinstance(data, str):
        raise _fail(where, "an ISO 8601 time")
    try:
        return dt.datetime.fromisoformat(data)
    except ValueError:
        raise _fail(where, "an ISO 8601 time") from None


def _bool(data: object, where: str) -> object:
    if not isinstance(data, bool):
        raise _fail(where, "true or false")
    return data


def _int(data: object, where: str) -> object:
    if not isinstance(data, int) or isinstance(data, bool):
        raise _fail(where, "an integer")
    return data


def _float(data: object, where: str) -> object:
    if not isinstance(data, int | float) or isinstance(data, bool):
        raise _fail(where, "a number")
    return float(data)


def _str(data: object, where: str) -> object:
    if not isinstance(data, str):
        raise _fail(where, "a string")
    return data


_PLAIN_READERS: dict[int, tuple[object, _Reader]] = {  # by id (see ``_reader``)
    id(typing.Any): (typing.Any, _any),
    id(object): (object, _any),
    id(SecretFields): (SecretFields, _secret_fields),
    id(Sensitive): (Sensitive, _sensitive),
    id(dt.datetime): (dt.datetime, _datetime),
    id(bool): (bool, _bool),
    id(int): (int, _int),
    id(float): (float, _float),
    id(str): (str, _str),
}
_READERS = dict(_PLAIN_READERS)
"""The plain readers, then each hint's as planned."""


def _plan_reader(tp: Any) -> _Reader:
    """How a value of type hint ``tp`` is read from the wire: ``reader(data, where)`` gives
    it, or raises ``InvalidRequest`` naming ``where`` (``TypeError`` for a hint no wire
    form has, when such a value is read)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _union(args)
    if origin is typing.Literal:
        expected = " or ".join(repr(a) for a in args)

        def literal(data: object, where: str) -> object:
            if data not in args:
                raise _fail(where, expected)
            return data

        return literal
    if origin is Sensitive:
        return _sensitive
    if origin in (tuple, list, frozenset):
        return _collection(origin, args[0] if args else typing.Any)
    if origin in (dict, Mapping) or origin is typing.get_origin(Mapping[str, str]):
        return _object(args[1] if len(args) == 2 else typing.Any)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass(tp)

    def refuse(data: object, where: str) -> object:
        raise TypeError(f"cannot read {tp!r} from the wire")

    return refuse


def _union(args: tuple[Any, ...]) -> _Reader:
    """The first of ``args`` that reads the data (``None`` where ``NoneType`` is one); else
    the first one's complaint."""
    nullable = type(None) in args
    options = [_reader(arg) for arg in args if arg is not type(None)]

    def union(data: object, where: str) -> object:
        if data is None and nullable:
            return None
        problems = []
        for option in options:
            try:
                return option(data, where)
            except InvalidRequest as exc:
                problems.append(str(exc))
        raise InvalidRequest(problems[0] if problems else f"{where}: unexpected null")

    return union


def _collection(origin: type, item: Any) -> _Reader:
    """A JSON list of ``item`` as a tuple (a frozenset for ``origin`` frozenset)."""
    read_item = _reader(item)
    make: Callable[[list[object]], object] = frozenset if origin is frozenset else tuple

    def collection(data: object, where: str) -> object:
        if not isinstance(data, list):
            raise _fail(where, "a list")
        return make([read_item(v, f"{where}[{i}]") for i, v in enumerate(data)])

    return collection


def _object(value_type: Any) -> _Reader:
    """A JSON object of ``value_type`` members as a dict (keys as strings)."""
    read_value = _reader(value_type)

    def mapping(data: object, where: str) -> object:
        if not isinstance(data, dict):
            raise _fail(where, "an object")
        return {str(k): read_value(v, _member(where, str(k))) for k, v in data.items()}

    return mapping


def _dataclass(cls: type) -> _Reader:
    """A JSON object as dataclass ``cls``: each init field given read by its hint, a field
    without a default required. The fields are planned at the first read (a dataclass may
    hold itself)."""
    planned: tuple[tuple[str, _Reader, bool], ...] | None = None

    def dataclass(data: object, where: str) -> object:
        nonlocal planned
        if not isinstance(data, dict):
            raise _fail(where, "an object")
        plan = planned
        if plan is None:  # built whole, then kept: a thread never sees half a plan
            hints = _hints(cls)
            plan = planned = tuple(
                (
                    f.name,
                    _reader(hints[f.name]),
                    f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                )
                for f in dataclasses.fields(cls)
                if f.init
            )
        kwargs = {}
        for name, read, required in plan:
            if name in data:
                kwargs[name] = read(data[name], f"{where}.{name}")
            elif required:
                raise InvalidRequest(f"{where}: missing field {name!r}")
        return cls(**kwargs)

    return dataclass
