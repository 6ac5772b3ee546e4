"""The secrets catalog: categories, their fields, generators, validators and templates.

``default_catalog()`` is the strategy's five categories (``default.yaml``);
``load_catalog(path)`` reads a custom one (schema in ``loader``). A ``Category``
builds complete field sets (``build``) and checks them (``validate``);
``generate(kind, **params)`` makes one value from the OS CSPRNG.
"""

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
from medsecrets.catalog.validators import (
    VALIDATORS,
    Validator,
    ValidatorKind,
    build_validator,
)

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
