"""The JSON wire form of medsecrets' value types, shared by the API and the SDK.

``to_wire(value)`` turns a frozen dataclass (and what it holds: datetimes,
tuples, mappings, ``SecretFields``, ``Sensitive``) into JSON-ready data;
``from_wire(cls, data)`` rebuilds an instance of ``cls`` from it, driven by the
dataclass's type hints, and raises ``InvalidRequest`` naming the field when the
data does not fit. This is the transport edge: ``SecretFields`` and
``Sensitive`` values are revealed here and only here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from medsecrets.errors import InvalidRequest, quote
from medsecrets.sensitive import SecretFields, Sensitive

__all__ = ["from_wire", "to_wire"]

JSON = None | bool | int | float | str | list["JSON"] | dict[str, "JSON"]
T = TypeVar("T")


_SCALARS = frozenset({type(None), bool, int, float, str})


@functools.cache
def _wire_fields(cls: type) -> tuple[str, ...] | None:
    """The fields of dataclass ``cls`` that go on the wire (not ``_``-prefixed); else ``None``."""
    if not dataclasses.is_dataclass(cls):
        return None
    return tuple(f.name for f in dataclasses.fields(cls) if not f.name.startswith("_"))


def to_wire(value: object) -> JSON:
    """JSON-ready form of ``value`` (dataclass, datetime, sequence, mapping, scalar)."""
    kind: type = type(value)
    if kind in _SCALARS:
        return value  # type: ignore[return-value]
    names = _wire_fields(kind)
    if names is not None:
        return {name: to_wire(getattr(value, name)) for name in names}
    if isinstance(value, bool | int | float | str):  # subclasses (enums)
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, SecretFields):
        return value.to_dict()  # type: ignore[return-value]
    if isinstance(value, Sensitive):
        revealed = value.reveal()
        return revealed if isinstance(revealed, str) else revealed.hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_wire(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.name.startswith("_")
        }
    if isinstance(value, Mapping):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, tuple | list | frozenset | set):
        items = sorted(value) if isinstance(value, frozenset | set) else value
        return [to_wire(v) for v in items]
    raise TypeError(f"cannot put {type(value).__name__} on the wire")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_wire(cls: type[T], data: object, *, where: str = "") -> T:
    """An instance of dataclass ``cls`` rebuilt from ``data`` (see module docstring)."""
    return typing.cast(T, _build(cls, data, where or cls.__name__))


def _fail(where: str, expected: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: expected {expected}")


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_./-]{1,64}")


def _member(where: str, key: str) -> str:
    """Where a mapping's member is, for a message: ``where.key``, or ``where['key']``
    quoted (cut, control characters replaced) when the client's key is not plain."""
    return f"{where}.{key}" if _PLAIN_KEY.fullmatch(key) else f"{where}[{quote(key)}]"


def _build(tp: Any, data: object, where: str) -> object:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is typing.Any or tp is object:
        return data
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        problems = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _build(arg, data, where)
            except InvalidRequest as exc:
                problems.append(str(exc))
        raise InvalidRequest(problems[0] if problems else f"{where}: unexpected null")
    if origin is typing.Literal:
        if data not in args:
            raise _fail(where, " or ".join(repr(a) for a in args))
        return data
    if tp is SecretFields:
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise _fail(where, "an object of strings")
        return SecretFields(data)
    if origin is Sensitive or tp is Sensitive:
        if not isinstance(data, str):
            raise _fail(where, "a string")
        return Sensitive(data)
    if tp is dt.datetime:
        if not isinstance(data, str):
            raise _fail(where, "an ISO 8601 time")
        try:
            return dt.datetime.fromisoformat(data)
        except ValueError:
            raise _fail(where, "an ISO 8601 time") from None
    if tp is bool:
        if not isinstance(data, bool):
            raise _fail(where, "true or false")
        return data
    if tp is int:
        if not isinstance(data, int) or isinstance(data, bool):
            raise _fail(where, "an integer")
        return data
    if tp is float:
        if not isinstance(data, int | float) or isinstance(data, bool):
            raise _fail(where, "a number")
        return float(data)
    if tp is str:
        if not isinstance(data, str):
            raise _fail(where, "a string")
        return data
    if origin in (tuple, list, frozenset):
        if not isinstance(data, list):
            raise _fail(where, "a list")
        item = args[0] if args else typing.Any
        built = [_build(item, v, f"{where}[{i}]") for i, v in enumerate(data)]
        return frozenset(built) if origin is frozenset else tuple(built)
    if origin in (dict, Mapping) or origin is typing.get_origin(Mapping[str, str]):
        if not isinstance(data, dict):
            raise _fail(where, "an object")
        value_type = args[1] if len(args) == 2 else typing.Any
        return {str(k): _build(value_type, v, _member(where, str(k))) for k, v in data.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise _fail(where, "an object")
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if not f.init:
                continue
            if f.name in data:
                kwargs[f.name] = _build(hints[f.name], data[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InvalidRequest(f"{where}: missing field {f.name!r}")
        return tp(**kwargs)
    raise TypeError(f"cannot read {tp!r} from the wire")
