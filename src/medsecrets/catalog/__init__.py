"""The secrets catalog: categories, their fields, generators, validators and templates.

``default_catalog()`` is the strategy's five categories (``default.yaml``);
``load_catalog(path)`` reads a custom one (schema in ``loader``). A ``Category``
builds complete field sets (``build``) and checks them (``validate``);
``generate(kind, **params)`` makes one value from the OS CSPRNG.

The names below load lazily (PEP 562): importing the package imports none of its
modules. Nothing is read from disk
before ``default_catalog()`` or ``load_catalog()`` is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medsecrets.lazy import resolve

if TYPE_CHECKING:
    from medsecrets.catalog.generators import (
        GENERATORS,
        GeneratorKind,
        RandomSource,
        SystemRandomSource,
        generate,
    )
    from medsecrets.catalog.loader import default_catalog, load_catalog, parse_catalog
    from medsecrets.catalog.model import (
        DUMMY_MARKER,
        Catalog,
        Category,
        FieldSpec,
        GeneratorSpec,
        KekSpec,
        RotationPolicy,
        ValidatorSpec,
        is_dummy,
    )
    from medsecrets.catalog.templates import Template, parse_template
    from medsecrets.catalog.validators import VALIDATORS, Validator, ValidatorKind, build_validator

__all__ = [
    "DUMMY_MARKER",
    "GENERATORS",
    "VALIDATORS",
    "Catalog",
    "Category",
    "FieldSpec",
    "GeneratorKind",
    "GeneratorSpec",
    "KekSpec",
    "RandomSource",
    "RotationPolicy",
    "SystemRandomSource",
    "Template",
    "Validator",
    "ValidatorKind",
    "ValidatorSpec",
    "build_validator",
    "default_catalog",
    "generate",
    "is_dummy",
    "load_catalog",
    "parse_catalog",
    "parse_template",
]

_EXPORTS = {
    "Catalog": "medsecrets.catalog.model",
    "Category": "medsecrets.catalog.model",
    "DUMMY_MARKER": "medsecrets.catalog.model",
    "FieldSpec": "medsecrets.catalog.model",
    "GENERATORS": "medsecrets.catalog.generators",
    "GeneratorKind": "medsecrets.catalog.generators",
    "GeneratorSpec": "medsecrets.catalog.model",
    "KekSpec": "medsecrets.catalog.model",
    "RandomSource": "medsecrets.catalog.generators",
    "RotationPolicy": "medsecrets.catalog.model",
    "SystemRandomSource": "medsecrets.catalog.generators",
    "Template": "medsecrets.catalog.templates",
    "VALIDATORS": "medsecrets.catalog.validators",
    "Validator": "medsecrets.catalog.validators",
    "ValidatorKind": "medsecrets.catalog.validators",
    "ValidatorSpec": "medsecrets.catalog.model",
    "build_validator": "medsecrets.catalog.validators",
    "default_catalog": "medsecrets.catalog.loader",
    "generate": "medsecrets.catalog.generators",
    "is_dummy": "medsecrets.catalog.model",
    "load_catalog": "medsecrets.catalog.loader",
    "parse_catalog": "medsecrets.catalog.loader",
    "parse_template": "medsecrets.catalog.templates",
}


def __getattr__(name: str) -> object:
    return resolve(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
