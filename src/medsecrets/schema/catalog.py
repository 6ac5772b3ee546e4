"""The catalog on the wire, and generated values.

The API shows a category without its development dummies and honeytoken
flags: these view types are what ``GET /v1/catalog`` sends, not
``medsecrets.catalog.model.Category`` (which would fail its own integrity
checks without them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from medsecrets.sensitive import Sensitive

__all__ = [
    "CatalogInfo",
    "CategoryInfo",
    "FieldInfo",
    "FieldSource",
    "Generated",
    "GeneratorInfo",
    "KekInfo",
    "ParamValue",
    "RotationPolicyInfo",
    "ValidatorInfo",
]

ParamValue = int | float | str | bool
"""A generator or validator parameter."""

FieldSource = Literal["generated", "provided", "derived"]
"""Where a field's value comes from."""


@dataclass(frozen=True, slots=True)
class GeneratorInfo:
    """A generator kind and its parameters."""

    kind: str
    params: Mapping[str, ParamValue]


@dataclass(frozen=True, slots=True)
class ValidatorInfo:
    """A validator kind and its parameters."""

    kind: str
    params: Mapping[str, ParamValue]


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """One field of a category."""

    name: str
    description: str
    source: FieldSource
    generator: GeneratorInfo | None
    validators: tuple[ValidatorInfo, ...]
    template: str | None


@dataclass(frozen=True, slots=True)
class RotationPolicyInfo:
    """A category's rotation policy."""

    interval_days: int
    strategy: str
    keep_previous: bool


@dataclass(frozen=True, slots=True)
class KekInfo:
    """A category's key-encryption key."""

    provider: str
    key_id: str | None


@dataclass(frozen=True, slots=True)
class CategoryInfo:
    """``GET /v1/catalog/{category}``: ``Category`` of docs/api.md."""

    name: str
    description: str
    fields: tuple[FieldInfo, ...]
    rotation: RotationPolicyInfo
    kek: KekInfo


@dataclass(frozen=True, slots=True)
class CatalogInfo:
    """``GET /v1/catalog``: the server's catalog."""

    prefix: str
    development_environments: tuple[str, ...]
    categories: tuple[CategoryInfo, ...]


@dataclass(frozen=True, slots=True)
class Generated:
    """``POST /v1/generate``: a freshly generated value (shown once, never stored)."""

    kind: str
    value: Sensitive[str]
