"""The secrets catalog: which categories exist, their fields, and how each field gets a value.

Values (all frozen, slotted):

- ``GeneratorSpec`` / ``ValidatorSpec``: a generator or validator kind with parameters
  (see ``generators`` and ``validators`` for the kinds);
- ``FieldSpec``: one field of a category and its ``source``:
  ``generated`` (by its generator), ``provided`` (by a person; in development
  environments a recognisable dummy stands in) or ``derived`` (rendered from a
  template over the other fields, see ``templates``);
- ``RotationPolicy``, ``KekSpec``;
- ``Category``: the fields, rotation and key-encryption key of one secret category,
  with ``build`` (complete a field set), ``validate`` and ``problems`` (every failure);
- ``Catalog``: every category, the path prefix, the development environments and the
  honeytokens (decoy secret paths: ``is_honeytoken``).

Construction checks integrity (kinds and parameters known, templates reference
declared fields without cycles, explicit dummies pass their validators, ...) and
raises ``CatalogError`` naming the problem; the loader runs the same checks
first with file and line numbers.

Dummy values carry ``DUMMY_MARKER`` (``DUMMY-DEV-ONLY``) unless a field declares
its own ``dummy`` (for formats that cannot hold the marker, such as hex keys);
``Category.is_dummy`` recognises both.
"""

from __future__ import annotations

import hmac
import re
import types
from collections.abc import Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Literal

from medsecrets.catalog.generators import GENERATORS, RandomSource, SystemRandomSource
from medsecrets.catalog.templates import parse_template
from medsecrets.catalog.validators import ParamValue, Validator, build_validator
from medsecrets.errors import CatalogError, InvalidRequest, NotFoundError, ValidationError
from medsecrets.schema.catalog import FieldSource

__all__ = [
    "CATEGORY_NAME",
    "DUMMY_MARKER",
    "FIELD_NAME",
    "ROTATION_STRATEGIES",
    "Catalog",
    "Category",
    "FieldSource",
    "FieldSpec",
    "GeneratorSpec",
    "KekProvider",
    "KekSpec",
    "RotationPolicy",
    "ValidatorSpec",
    "derived_order",
    "honeytoken_problem",
    "is_dummy",
    "is_honeytoken_path",
]

DUMMY_MARKER = "DUMMY-DEV-ONLY"
"""Every generic development dummy contains this marker."""

CATEGORY_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}\Z")
"""Category names (and the catalog prefix): lower-case, digits, hyphens."""

FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}\Z")
"""Field names: lower-case, digits, underscores (usable as template and env names)."""

ROTATION_STRATEGIES = frozenset({"regenerate", "regenerate-keep-previous", "manual"})
"""``regenerate``: new values for generated fields, old version retired;
``regenerate-keep-previous``: same, the previous version stays readable (encryption keys,
backward compatibility); ``manual``: a person provides the new values (reminder only)."""

MAX_INTERVAL_DAYS = 3650

GENERATION_ATTEMPTS = 32
"""Draws ``FieldSpec.generate`` makes before giving up on a generator whose values fail the
field's validators. The loader refuses a generator that fails often (see
``loader.GENERATED_SAMPLES``), so an accepted one exhausts them with negligible probability."""

KekProvider = Literal["local", "aws-kms"]


def _frozen(params: Mapping[str, ParamValue]) -> Mapping[str, ParamValue]:
    return types.MappingProxyType(dict(params))


def is_dummy(value: str) -> bool:
    """True when ``value`` carries the development dummy marker."""
    return DUMMY_MARKER in value


@dataclass(frozen=True, slots=True)
class GeneratorSpec:
    """A generator kind (``generators.GENERATORS``) and its parameters."""

    kind: str
    params: Mapping[str, ParamValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen(self.params))


@dataclass(frozen=True, slots=True)
class ValidatorSpec:
    """A validator kind (``validators.VALIDATORS``) and its parameters."""

    kind: str
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    _bound: Validator | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen(self.params))

    def check(self, value: str) -> str | None:
        """None if ``value`` passes, else the rule it breaks (never the value)."""
        bound = self._bound
        if bound is None:  # bound once, on first use (every value written is checked)
            bound = build_validator(self.kind, self.params)
            object.__setattr__(self, "_bound", bound)
        return bound.check(value)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a category.

    ``generated`` fields have a ``generator``; ``derived`` fields a ``template``;
    ``provided`` fields may have a ``dummy`` used in development environments
    (it must pass the field's validators). Validators apply to every value,
    whatever its source.
    """

    name: str
    description: str = ""
    _: KW_ONLY
    source: FieldSource = "provided"
    generator: GeneratorSpec | None = None
    template: str | None = None
    validators: tuple[ValidatorSpec, ...] = ()
    dummy: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "validators", tuple(self.validators))
        problem = _field_shape_problem(self)
        if problem is not None:
            raise CatalogError(f"field {self.name!r}: {problem}")

    def check(self, value: str) -> str | None:
        """The first rule ``value`` breaks, or None."""
        for spec in self.validators:
            rule = spec.check(value)
            if rule is not None:
                return rule
        return None

    def generate(self, source: RandomSource | None = None) -> str:
        """A fresh value from the field's generator that passes the field's validators.

        A value that fails them is drawn again, at most ``GENERATION_ATTEMPTS`` times in all;
        then ``ValidationError(field, ...)`` names the last rule broken (never the value).
        ``source`` injects randomness (default: OS CSPRNG).
        """
        assert self.generator is not None, "only generated fields have a generator"
        kind = GENERATORS[self.generator.kind]
        rule: str | None = None
        for _ in range(GENERATION_ATTEMPTS):
            value = kind.generate(self.generator.params, source=source).reveal()
            rule = self.check(value)
            if rule is None:
                return value
        raise ValidationError(
            self.name,
            f"generator: no value in {GENERATION_ATTEMPTS} draws passed the validators ({rule})",
        )

    def generic_dummy(self, source: RandomSource | None = None) -> str:
        """``DUMMY-DEV-ONLY-<field>-<16 random hex chars>``."""
        suffix = (source or SystemRandomSource()).token_bytes(8).hex()
        return f"{DUMMY_MARKER}-{self.name}-{suffix}"

    def dummy_value(self, source: RandomSource | None = None) -> str:
        """The development stand-in: the declared ``dummy``, else ``generic_dummy()``."""
        return self.dummy if self.dummy is not None else self.generic_dummy(source)


def _field_shape_problem(spec: FieldSpec) -> str | None:
    if not FIELD_NAME.match(spec.name):
        return "bad field name (expected [a-z][a-z0-9_]*, at most 63 characters)"
    if spec.source not in ("generated", "provided", "derived"):
        return f"unknown source {spec.source!r} (expected generated, provided or derived)"
    if spec.source == "generated" and spec.generator is None:
        return "a generated field needs a generator"
    if spec.source != "generated" and spec.generator is not None:
        return f"a {spec.source} field cannot have a generator"
    if spec.source == "derived" and spec.template is None:
        return "a derived field needs a template"
    if spec.source != "derived" and spec.template is not None:
        return f"a {spec.source} field cannot have a template"
    if spec.source != "provided" and spec.dummy is not None:
        return f"only provided fields have a dummy; this one is {spec.source}"
    return None


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """How often and how a category rotates.

    ``keep_previous`` keeps the previous version readable after a rotation; it
    is implied (and required) by ``regenerate-keep-previous``.
    """

    interval_days: int
    strategy: str = "regenerate"
    _: KW_ONLY
    keep_previous: bool = False

    def __post_init__(self) -> None:
        days = self.interval_days
        if isinstance(days, bool) or not isinstance(days, int):
            raise CatalogError("rotation: interval_days must be an integer")
        if not 1 <= days <= MAX_INTERVAL_DAYS:
            raise CatalogError(f"rotation: interval_days must be between 1 and {MAX_INTERVAL_DAYS}")
        if self.strategy not in ROTATION_STRATEGIES:
            known = ", ".join(sorted(ROTATION_STRATEGIES))
            raise CatalogError(f"rotation: unknown strategy {self.strategy!r} (known: {known})")
        if self.strategy == "regenerate-keep-previous" and not self.keep_previous:
            raise CatalogError(
                "rotation: strategy regenerate-keep-previous needs keep_previous: true"
            )


@dataclass(frozen=True, slots=True)
class KekSpec:
    """The key-encryption key of a category: ``local`` or an AWS KMS key (id, ARN or alias)."""

    provider: KekProvider = "local"
    key_id: str | None = None

    def __post_init__(self) -> None:
        if self.provider not in ("local", "aws-kms"):
            raise CatalogError(f"kek: unknown provider {self.provider!r} (known: aws-kms, local)")
        if self.key_id is not None and not self.key_id.strip():
            raise CatalogError("kek: key_id must not be empty")

    @staticmethod
    def default_key_id(prefix: str, category: str) -> str:
        """The KMS alias a category uses unless told otherwise: ``alias/<prefix>-<category>``."""
        return f"alias/{prefix}-{category}"


def derived_order(fields: tuple[FieldSpec, ...]) -> tuple[str, ...]:
    """Derived field names in an order where each comes after the derived fields it reads.

    ``CatalogError`` if a template reads an undeclared field, itself, or is part of a cycle.
    """
    by_name = {f.name: f for f in fields}
    reads: dict[str, frozenset[str]] = {}
    for f in fields:
        if f.source != "derived" or f.template is None:
            continue
        try:
            template = parse_template(f.template)
        except InvalidRequest as exc:
            raise CatalogError(f"field {f.name!r}: {exc.message}") from None
        for name in sorted(template.fields):
            if name == f.name:
                raise CatalogError(f"field {f.name!r}: template reads the field itself")
            if name not in by_name:
                raise CatalogError(f"field {f.name!r}: template reads undeclared field {name!r}")
        reads[f.name] = template.fields
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise CatalogError("templates form a cycle: " + " -> ".join(cycle))
        state[name] = 1
        for dep in sorted(reads[name]):
            if dep in reads:
                visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for f in fields:
        if f.name in reads:
            visit(f.name, [])
    return tuple(order)


@dataclass(frozen=True, slots=True)
class Category:
    """One secret category (stored at ``<prefix>/<environment>/<name>``)."""

    name: str
    description: str
    _: KW_ONLY
    fields: tuple[FieldSpec, ...]
    rotation: RotationPolicy
    kek: KekSpec = field(default_factory=KekSpec)
    honeytoken: bool = False
    _by_name: Mapping[str, FieldSpec] = field(init=False, repr=False, compare=False)
    _derived: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        if not CATEGORY_NAME.match(self.name):
            raise CatalogError(
                f"category {self.name!r}: bad name (expected [a-z][a-z0-9-]*, at most 63 chars)"
            )
        try:
            self._check()
        except CatalogError as exc:
            raise CatalogError(f"category {self.name!r}: {exc.problem}") from None

    def _check(self) -> None:
        if not self.fields:
            raise CatalogError("a category needs at least one field")
        by_name: dict[str, FieldSpec] = {}
        for f in self.fields:
            if f.name in by_name:
                raise CatalogError(f"duplicate field {f.name!r}")
            by_name[f.name] = f
            check_field_kinds(f)
        object.__setattr__(self, "_by_name", types.MappingProxyType(by_name))
        object.__setattr__(self, "_derived", derived_order(self.fields))
        if self.rotation.strategy != "manual" and not any(
            f.source == "generated" for f in self.fields
        ):
            raise CatalogError(
                f"rotation strategy {self.rotation.strategy} needs a generated field "
                "(use manual for categories a person provides)"
            )

    # --- queries ------------------------------------------------------------------------------

    def field(self, name: str) -> FieldSpec:
        """The field called ``name``; ``NotFoundError`` naming the declared fields."""
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(f.name for f in self.fields)
            raise NotFoundError(
                f"category {self.name!r} has no field {name!r} (fields: {known})"
            ) from None

    def field_names(self) -> tuple[str, ...]:
        """Field names in declaration order."""
        return tuple(f.name for f in self.fields)

    def is_dummy(self, value: str, *, field: str | None = None) -> bool:
        """True for a development dummy: the marker, or a declared ``dummy``.

        With ``field``, only that field's declared dummy counts (a real port
        ``5432`` is not a dummy in another field).
        """
        if is_dummy(value):
            return True
        candidates = [self.field(field)] if field is not None else self.fields
        encoded = value.encode()  # compare_digest refuses non-ASCII str: compare bytes
        return any(
            f.dummy is not None and hmac.compare_digest(f.dummy.encode(), encoded)
            for f in candidates
        )

    def dummy_fields(self, given: Mapping[str, str], *, development: bool) -> tuple[str, ...]:
        """The fields ``build(given, development=development)`` fills with a development dummy:
        the ``provided`` fields missing from ``given``, in a development environment (none in
        any other, where they are required). Sorted by name."""
        if not development:
            return ()
        return tuple(
            sorted(f.name for f in self.fields if f.source == "provided" and f.name not in given)
        )

    # --- building and validating ----------------------------------------------------------

    def build(
        self,
        given: Mapping[str, str],
        *,
        development: bool,
        generate_missing: bool = True,
        source: RandomSource | None = None,
    ) -> dict[str, str]:
        """The complete field set (declaration order) for one version of this category.

        - ``given`` values are kept (every one must be declared, else
          ``ValidationError(field, "not declared by category ...")``);
        - missing ``generated`` fields are generated (``FieldSpec.generate``: a value failing
          the field's validators is drawn again; ``generate_missing=False`` makes them an
          error instead);
        - missing ``provided`` fields get their dummy when ``development`` is true,
          else ``ValidationError(field, "required: provided by a person")``;
        - ``derived`` fields are rendered last; a given derived value must equal
          the rendering;
        - finally ``validate`` runs on the whole set.

        Errors never contain values. ``source`` injects randomness (default: OS CSPRNG).
        """
        for name, value in given.items():
            if name not in self._by_name:
                raise ValidationError(name, f"not declared by category {self.name!r}")
            if not isinstance(value, str):
                raise ValidationError(name, "must be a string")
        rng = source or SystemRandomSource()
        values: dict[str, str] = {}
        for f in self.fields:
            if f.source == "derived":
                continue
            if f.name in given:
                values[f.name] = given[f.name]
            elif f.source == "generated":
                if not generate_missing:
                    raise ValidationError(f.name, "required: missing and generation is disabled")
                values[f.name] = f.generate(rng)
            elif development:
                values[f.name] = f.dummy_value(rng)
            else:
                raise ValidationError(f.name, "required: provided by a person")
        for name in self._derived:
            rendered = self._render(name, values)
            if name in given and not hmac.compare_digest(given[name].encode(), rendered.encode()):
                raise ValidationError(
                    name, "derived: must equal its template's rendering (omit it to derive it)"
                )
            values[name] = rendered
        result = {f.name: values[f.name] for f in self.fields}
        self.validate(result)
        return result

    def _render(self, name: str, values: Mapping[str, str]) -> str:
        template = self._by_name[name].template
        assert template is not None
        return parse_template(template).render(values)

    def validate(self, fields: Mapping[str, str], *, complete: bool = True) -> None:
        """Raise ``ValidationError(field, rule)`` for the first of ``problems(fields)``:
        undeclared names first, then in declaration order. Messages never contain a value."""
        problem = next(self.problems(fields, complete=complete), None)
        if problem is not None:
            raise ValidationError(*problem)

    def problems(
        self, fields: Mapping[str, str], *, complete: bool = True
    ) -> Iterator[tuple[str, str]]:
        """Every ``(field, rule)`` failure of ``fields`` (rules never contain a value).

        First each undeclared name; then, in declaration order, at most one per declared
        field: missing (only when ``complete``), not a string, the first validator it breaks,
        or, for a derived field, differing from its template's rendering. A derived field is
        checked against its template on its own, whenever every field it reads is present,
        whatever the other fields' problems.
        """
        for name in fields:
            if name not in self._by_name:
                yield name, f"not declared by category {self.name!r}"
        for f in self.fields:
            if f.name not in fields:
                if complete:
                    yield f.name, "required: missing"
                continue
            value = fields[f.name]
            if not isinstance(value, str):
                yield f.name, "must be a string"
                continue
            rule = f.check(value)
            if rule is None and f.source == "derived" and not self._renders_to(f, fields):
                rule = "derived: must equal its template's rendering"
            if rule is not None:
                yield f.name, rule

    def _renders_to(self, spec: FieldSpec, fields: Mapping[str, str]) -> bool:
        """Whether derived field ``spec``'s value in ``fields`` equals its template's rendering
        (true when a field the template reads is missing or not a string: nothing to compare)."""
        assert spec.template is not None
        template = parse_template(spec.template)
        if not all(isinstance(fields.get(dep), str) for dep in template.fields):
            return True
        rendered = template.render(fields)
        return hmac.compare_digest(fields[spec.name].encode(), rendered.encode())


def check_field_kinds(f: FieldSpec) -> None:
    """``CatalogError`` if ``f`` names an unknown generator/validator kind or bad parameters,
    or declares a dummy (or has a generic dummy) that fails its validators."""
    if f.generator is not None:
        kind = GENERATORS.get(f.generator.kind)
        if kind is None:
            known = ", ".join(sorted(GENERATORS))
            raise CatalogError(
                f"field {f.name!r}: unknown generator kind {f.generator.kind!r} (known: {known})"
            )
        try:
            kind.resolve(f.generator.params)
        except InvalidRequest as exc:
            raise CatalogError(f"field {f.name!r}: {exc.message}") from None
    for spec in f.validators:
        try:
            build_validator(spec.kind, spec.params)
        except InvalidRequest as exc:
            raise CatalogError(f"field {f.name!r}: {exc.message}") from None
    if f.source == "provided":
        sample = f.dummy if f.dummy is not None else f"{DUMMY_MARKER}-{f.name}-0123456789abcdef"
        rule = f.check(sample)
        if rule is not None:
            what = "its dummy" if f.dummy is not None else "its generic development dummy"
            hint = "" if f.dummy is not None else "; declare a dummy that passes them"
            raise CatalogError(f"field {f.name!r}: {what} fails a validator ({rule}){hint}")


def honeytoken_problem(path: str, categories: Mapping[str, Category]) -> str | None:
    """Why ``path`` cannot be a honeytoken path of a catalog with ``categories`` (None: it can).

    A honeytoken path is relative to the prefix: ``<environment>/<category>[/<name>...]``,
    no empty segment, no surrounding slash, and its category is declared (the decoy must
    look like, and be stored as, a real secret of that category).
    """
    from medsecrets.engines.secrets.paths import parse_path  # the store's own naming rules

    segments = path.split("/")
    if len(segments) < 2 or any(not s.strip() or s != s.strip() for s in segments):
        return "expected <environment>/<category>[/<name>] relative to the prefix"
    if segments[1] not in categories:
        known = ", ".join(categories)
        return f"unknown category {segments[1]!r} (known: {known})"
    try:  # a path no secret can have could never be read: the decoy would never fire
        parse_path(f"p/{path}", prefix="p", categories=categories)
    except InvalidRequest as exc:
        return exc.message
    return None


def is_honeytoken_path(
    path: str, *, prefix: str, honeytokens: frozenset[str], categories: frozenset[str]
) -> bool:
    """Whether ``path`` is a decoy: ``<prefix>/`` then a path listed in ``honeytokens``
    (relative to the prefix), or any path in one of the honeytoken ``categories``."""
    if not path.startswith(prefix) or path[len(prefix) : len(prefix) + 1] != "/":
        return False
    relative = path[len(prefix) + 1 :].rstrip("/")
    if relative in honeytokens:
        return True
    segments = relative.split("/", 2)
    return len(segments) > 1 and segments[1] in categories


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every category, the path prefix, which environments are for development, and honeytokens.

    Secrets live at ``<prefix>/<environment>/<category>`` (``secret_path``).
    ``honeytokens`` are decoy secret paths relative to the prefix (see
    ``honeytoken_problem`` for their shape); ``is_honeytoken`` also counts every
    secret of a category declared ``honeytoken: true``.
    """

    _: KW_ONLY
    prefix: str = "medessence"
    categories: Mapping[str, Category]
    development_environments: frozenset[str]
    source: str
    honeytokens: frozenset[str] = frozenset()
    honeytoken_categories: frozenset[str] = field(
        default=frozenset(), init=False, repr=False, compare=False
    )
    """The categories declared ``honeytoken: true`` (every secret in them is a decoy)."""

    def __post_init__(self) -> None:
        if not CATEGORY_NAME.match(self.prefix):
            raise CatalogError("prefix: expected [a-z][a-z0-9-]*", file=self.source)
        for key, category in self.categories.items():
            if key != category.name:
                raise CatalogError(
                    f"category registered as {key!r} is named {category.name!r}", file=self.source
                )
        object.__setattr__(self, "categories", types.MappingProxyType(dict(self.categories)))
        object.__setattr__(
            self, "development_environments", frozenset(self.development_environments)
        )
        object.__setattr__(self, "honeytokens", frozenset(self.honeytokens))
        object.__setattr__(
            self,
            "honeytoken_categories",
            frozenset(name for name, c in self.categories.items() if c.honeytoken),
        )
        for path in sorted(self.honeytokens):
            problem = honeytoken_problem(path, self.categories)
            if problem is not None:
                raise CatalogError(f"honeytoken {path!r}: {problem}", file=self.source)

    def is_honeytoken(self, path: str) -> bool:
        """True when the secret path ``path`` (``<prefix>/<environment>/<category>[/...]``)
        is a decoy: listed in ``honeytokens``, or in a ``honeytoken: true`` category."""
        return is_honeytoken_path(
            path,
            prefix=self.prefix,
            honeytokens=self.honeytokens,
            categories=self.honeytoken_categories,
        )

    def category(self, name: str) -> Category:
        """The category ``name``; ``NotFoundError`` naming the known categories."""
        try:
            return self.categories[name]
        except KeyError:
            known = ", ".join(self.names())
            raise NotFoundError(f"unknown secret category {name!r} (known: {known})") from None

    def names(self) -> tuple[str, ...]:
        """Category names in catalog order."""
        return tuple(self.categories)

    def is_development(self, environment: str) -> bool:
        """True when ``environment`` is a development environment (dummies allowed)."""
        return environment in self.development_environments

    def secret_path(self, environment: str, category: str) -> str:
        """``<prefix>/<environment>/<category>`` (the category must exist)."""
        self.category(category)
        return f"{self.prefix}/{environment}/{category}"

    def kek_key_id(self, category: str) -> str | None:
        """KEK key id of ``category``: declared, or ``alias/<prefix>-<category>`` for aws-kms."""
        kek = self.category(category).kek
        if kek.key_id is not None or kek.provider == "local":
            return kek.key_id
        return KekSpec.default_key_id(self.prefix, category)
