"""Load a secrets catalog from YAML, with a file name and line number on every error.

Schema (version 1). Unknown keys are rejected everywhere; ``*`` marks required keys::

    version: 1                          # * the schema version; only 1 exists
    prefix: medessence                  # path prefix: secrets live at <prefix>/<env>/<category>
    development_environments:           # environments where provided fields get dummies
      [development, dev, local, test]   #   (default: exactly this list)
    categories:                         # * at least one; order is kept
      database:                         # category name: [a-z][a-z0-9-]*
        description: Database credentials
        honeytoken: false               # a decoy category (alerts on any read); default false
        rotation:                       # *
          interval_days: 90             # * 1..3650
          strategy: regenerate          # regenerate (default) | regenerate-keep-previous | manual
          keep_previous: false          # default: true only for regenerate-keep-previous
        kek:                            # default: {provider: local}
          provider: aws-kms             # local | aws-kms
          key_id: alias/medessence-db   # default for aws-kms: alias/<prefix>-<category>
        fields:                         # * at least one; field name: [a-z][a-z0-9_]*
          password:
            description: Database password
            source: generated           # * generated | provided | derived
            generator: {kind: password, length: 25}   # * for generated; or just `password`
            validators:                 # every value (generated, provided, derived) must pass
              - {kind: min-length, length: 16}        # a mapping: kind + parameters
              - text                                  # or just the kind (no parameters)
          username:
            source: provided
            dummy: medessence_dev       # development stand-in (must pass the validators);
                                        #   default DUMMY-DEV-ONLY-<field>-<random hex>
          host: {source: provided, dummy: localhost, validators: [host]}
          database: {source: provided, dummy: medessence}
          connection_string:
            source: derived
            template: "postgresql://{username|urlquote}:{password|urlquote}@{host}/{database}"
    honeytokens:                        # decoy secrets: any read raises a critical alert
      - production/database/legacy-admin  # <environment>/<category>[/<name>], relative to the
                                        #   prefix; the category must be declared (default: [])

Generator and validator kinds and their parameters are documented in
``medsecrets.catalog.generators`` and ``medsecrets.catalog.validators``;
template syntax (``{field}``, ``{field|urlquote}``, ``{{``/``}}``) in
``medsecrets.catalog.templates``.

Every problem — YAML syntax, wrong type, unknown or duplicate key, unknown
generator or validator kind, bad parameter, template reading an undeclared field
or forming a cycle, bad interval, a dummy failing its validators, a generator whose
values often fail them (``GENERATED_SAMPLES``), a ``regex`` pattern that could backtrack
catastrophically, a number too large to read, a malformed, duplicate or
unknown-category honeytoken — raises ``CatalogError(problem, file=..., line=...)``.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import random
from typing import Final, NoReturn

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from medsecrets.catalog.generators import GENERATORS
from medsecrets.catalog.model import (
    CATEGORY_NAME,
    DUMMY_MARKER,
    FIELD_NAME,
    MAX_INTERVAL_DAYS,
    ROTATION_STRATEGIES,
    Catalog,
    Category,
    FieldSource,
    FieldSpec,
    GeneratorSpec,
    KekProvider,
    KekSpec,
    RotationPolicy,
    ValidatorSpec,
    honeytoken_problem,
)
from medsecrets.catalog.templates import parse_template
from medsecrets.catalog.validators import VALIDATORS, Parameter, ParamValue, check_param
from medsecrets.errors import CatalogError, InvalidRequest
from medsecrets.fdio import open_regular

__all__ = [
    "DEFAULT_DEVELOPMENT_ENVIRONMENTS",
    "GENERATED_FAILURES_ALLOWED",
    "GENERATED_SAMPLES",
    "MAX_CATALOG_BYTES",
    "RESERVED_PREFIXES",
    "SCHEMA_VERSION",
    "default_catalog",
    "load_catalog",
    "parse_catalog",
]

SCHEMA_VERSION = 1

RESERVED_PREFIXES = frozenset({"sys", "auth"})
"""Path prefixes a catalog may not use: tokens are granted ``sys/...`` paths for system
routes (``sys/audit``, ``sys/metrics``), and secret paths must never share them."""
DEFAULT_DEVELOPMENT_ENVIRONMENTS = ("development", "dev", "local", "test")

GENERATED_SAMPLES = 64
"""Values drawn from each generated field's generator when a catalog is loaded, to check them
against its validators. They come from a fixed-seed source, so a catalog check always gives
the same answer; the values are thrown away."""
GENERATED_FAILURES_ALLOWED = GENERATED_SAMPLES // 4
"""A generator with more failing samples than this is refused. ``Category.build`` draws a
failing value again (``model.GENERATION_ATTEMPTS`` times), so a generator whose values fail
less than half the time fails a build with probability below 2**-32."""
_SAMPLE_SEED = 20260101
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"

Entries = dict[str, tuple[ScalarNode, Node]]


MAX_CATALOG_BYTES: Final = 1 << 20
"""Largest catalog file read (the packaged one is under 8 KiB)."""


def load_catalog(path: str | os.PathLike[str]) -> Catalog:
    """Read and parse the catalog file at ``path`` (UTF-8 YAML).

    Only a regular file of at most ``MAX_CATALOG_BYTES`` is read (a FIFO would block
    the reader for ever, ``/dev/zero`` fill memory); any problem is ``CatalogError``
    naming the file.
    """
    source = os.fspath(path)
    try:
        with open_regular(source) as handle:
            data = handle.read(MAX_CATALOG_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CatalogError(f"cannot read the catalog ({reason})", file=source) from None
    if len(data) > MAX_CATALOG_BYTES:
        raise CatalogError("the catalog is larger than 1 MiB", file=source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CatalogError("the catalog is not UTF-8 text", file=source, line=line) from None
    return parse_catalog(text, source=source)


def parse_catalog(text: str, *, source: str) -> Catalog:
    """Parse catalog YAML ``text``; ``source`` names it in errors."""
    return _Parser(source).catalog(text)


@functools.cache
def default_catalog() -> Catalog:
    """The packaged default catalog (the strategy's five categories); parsed once."""
    resource = importlib.resources.files("medsecrets.catalog").joinpath("default.yaml")
    return parse_catalog(resource.read_text(encoding="utf-8"), source=str(resource))


class _SampleSource:
    """A reproducible ``RandomSource`` (fixed seed) for the load-time generator check only:
    NOT cryptographically secure; the values drawn from it are thrown away."""

    def __init__(self) -> None:
        self._rng = random.Random(_SAMPLE_SEED)  # noqa: S311 - see the class docstring

    def token_bytes(self, n: int) -> bytes:
        return self._rng.randbytes(n)

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)


def _generator_problem(spec: FieldSpec) -> str | None:
    """Why the values of generated field ``spec``'s generator disagree with its validators
    (None: they agree): more than ``GENERATED_FAILURES_ALLOWED`` of ``GENERATED_SAMPLES``
    values, drawn from a fixed seed, fail them (else writes and rotations fail)."""
    assert spec.generator is not None
    kind = GENERATORS[spec.generator.kind]
    source = _SampleSource()
    rules = [
        spec.check(kind.generate(spec.generator.params, source=source).reveal())
        for _ in range(GENERATED_SAMPLES)
    ]
    failed = [rule for rule in rules if rule is not None]
    if len(failed) <= GENERATED_FAILURES_ALLOWED:
        return None
    return (
        f"a value of the generator fails a validator: {failed[0]} ({len(failed)} of "
        f"{GENERATED_SAMPLES} sample values fail; at most {GENERATED_FAILURES_ALLOWED} may)"
    )


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _Parser:
    """Walks the composed YAML node tree, so every value keeps its line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._constructor = SafeConstructor()

    def fail(self, node: Node | int, problem: str) -> NoReturn:
        line = node if isinstance(node, int) else _line(node)
        raise CatalogError(problem, file=self.source, line=line)

    # --- document -----------------------------------------------------------------------

    def catalog(self, text: str) -> Catalog:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = int(mark.line) + 1 if mark is not None else None
            problem = " ".join(p for p in (exc.context, exc.problem) if p)
            raise CatalogError(
                f"YAML syntax error: {problem}", file=self.source, line=line
            ) from None
        except yaml.YAMLError as exc:  # reader errors: bad characters
            position = getattr(exc, "position", None)
            line = text[:position].count("\n") + 1 if isinstance(position, int) else None
            raise CatalogError(
                "YAML error: unreadable character", file=self.source, line=line
            ) from None
        if root is None:
            raise CatalogError("the catalog is empty", file=self.source, line=1)
        top = self.entries(
            root,
            "catalog",
            allowed=("version", "prefix", "development_environments", "categories", "honeytokens"),
            required=("version", "categories"),
        )
        version_node = top["version"][1]
        if self.integer(version_node, "version") != SCHEMA_VERSION:
            self.fail(version_node, f"unsupported catalog version (supported: {SCHEMA_VERSION})")
        prefix = "medessence"
        if "prefix" in top:
            prefix_node = top["prefix"][1]
            prefix = self.string(prefix_node, "prefix")
            if not CATEGORY_NAME.match(prefix):
                self.fail(prefix_node, "prefix: expected [a-z][a-z0-9-]*")
            if prefix in RESERVED_PREFIXES:
                self.fail(
                    prefix_node,
                    f"prefix: {prefix!r} is reserved (system routes are authorised on "
                    f"'{prefix}/...' paths, which secret paths would share)",
                )
        environments: frozenset[str] = frozenset(DEFAULT_DEVELOPMENT_ENVIRONMENTS)
        if "development_environments" in top:
            environments = self.environments(top["development_environments"][1])
        categories_key, categories_node = top["categories"]
        declared = self.entries(categories_node, "categories")
        if not declared:
            self.fail(categories_key, "categories: declare at least one category")
        categories: dict[str, Category] = {}
        for name, (key, value) in declared.items():
            categories[name] = self.category(prefix, key, value)
        honeytokens: frozenset[str] = frozenset()
        if "honeytokens" in top:
            honeytokens = self.honeytokens(top["honeytokens"][1], categories)
        try:
            return Catalog(
                prefix=prefix,
                categories=categories,
                development_environments=environments,
                source=self.source,
                honeytokens=honeytokens,
            )
        except CatalogError as exc:  # pragma: no cover - every rule is checked above
            self.fail(root, exc.problem)

    def environments(self, node: Node) -> frozenset[str]:
        if not isinstance(node, SequenceNode):
            self.fail(node, "development_environments must be a list of environment names")
        names: list[str] = []
        for item in node.value:
            name = self.string(item, "development_environments entry")
            if not name.strip():
                self.fail(item, "development_environments: empty environment name")
            if name in names:
                self.fail(item, f"development_environments: duplicate {name!r}")
            names.append(name)
        return frozenset(names)

    def honeytokens(self, node: Node, categories: dict[str, Category]) -> frozenset[str]:
        if not isinstance(node, SequenceNode):
            self.fail(node, "honeytokens must be a list of secret paths")
        paths: dict[str, int] = {}
        for item in node.value:
            path = self.string(item, "honeytokens entry")
            problem = honeytoken_problem(path, categories)
            if problem is not None:
                self.fail(item, f"honeytokens: {path!r}: {problem}")
            if path in paths:
                self.fail(item, f"honeytokens: duplicate {path!r} (first on line {paths[path]})")
            paths[path] = _line(item)
        return frozenset(paths)

    # --- categories ---------------------------------------------------------------------

    def category(self, prefix: str, key: ScalarNode, node: Node) -> Category:
        name = key.value
        if not CATEGORY_NAME.match(name):
            self.fail(key, f"bad category name {name!r} (expected [a-z][a-z0-9-]*)")
        what = f"category {name!r}"
        entries = self.entries(
            node,
            what,
            allowed=("description", "honeytoken", "rotation", "kek", "fields"),
            required=("rotation", "fields"),
            anchor=key,
        )
        description = self.opt_string(entries, "description", what) or ""
        honeytoken = False
        if "honeytoken" in entries:
            honeytoken = self.boolean(entries["honeytoken"][1], f"{what}: honeytoken")
        fields_key, fields_node = entries["fields"]
        declared = self.entries(fields_node, f"{what}: fields")
        if not declared:
            self.fail(fields_key, f"{what}: declare at least one field")
        fields: list[FieldSpec] = []
        template_lines: dict[str, int] = {}
        for field_name, (fkey, fnode) in declared.items():
            spec, template_line = self.field(what, fkey, fnode)
            fields.append(spec)
            if template_line is not None:
                template_lines[field_name] = template_line
        self.check_templates(what, fields, template_lines)
        rotation = self.rotation(what, entries["rotation"], fields)
        kek = KekSpec()
        if "kek" in entries:
            kek = self.kek(what, prefix, name, entries["kek"][1])
        try:
            return Category(
                name,
                description,
                fields=tuple(fields),
                rotation=rotation,
                kek=kek,
                honeytoken=honeytoken,
            )
        except CatalogError as exc:  # a rule not checked above: point at the category
            self.fail(key, exc.problem)

    def rotation(
        self, what: str, entry: tuple[ScalarNode, Node], fields: list[FieldSpec]
    ) -> RotationPolicy:
        key, node = entry
        what = f"{what}: rotation"
        entries = self.entries(
            node,
            what,
            allowed=("interval_days", "strategy", "keep_previous"),
            required=("interval_days",),
            anchor=key,
        )
        days_node = entries["interval_days"][1]
        days = self.integer(days_node, f"{what}: interval_days")
        if not 1 <= days <= MAX_INTERVAL_DAYS:
            self.fail(days_node, f"{what}: interval_days must be between 1 and {MAX_INTERVAL_DAYS}")
        strategy = "regenerate"
        strategy_node: Node = key
        if "strategy" in entries:
            strategy_node = entries["strategy"][1]
            strategy = self.string(strategy_node, f"{what}: strategy")
            if strategy not in ROTATION_STRATEGIES:
                known = ", ".join(sorted(ROTATION_STRATEGIES))
                self.fail(strategy_node, f"{what}: unknown strategy {strategy!r} (known: {known})")
        keep_previous = strategy == "regenerate-keep-previous"
        if "keep_previous" in entries:
            keep_node = entries["keep_previous"][1]
            keep_previous = self.boolean(keep_node, f"{what}: keep_previous")
            if strategy == "regenerate-keep-previous" and not keep_previous:
                self.fail(keep_node, f"{what}: regenerate-keep-previous needs keep_previous: true")
        if strategy != "manual" and not any(f.source == "generated" for f in fields):
            self.fail(
                strategy_node,
                f"{what}: strategy {strategy} needs a generated field "
                "(use manual for categories a person provides)",
            )
        return RotationPolicy(days, strategy, keep_previous=keep_previous)

    def kek(self, what: str, prefix: str, category: str, node: Node) -> KekSpec:
        what = f"{what}: kek"
        entries = self.entries(node, what, allowed=("provider", "key_id"), required=("provider",))
        provider_node = entries["provider"][1]
        provider = self.string(provider_node, f"{what}: provider")
        if provider not in ("local", "aws-kms"):
            self.fail(
                provider_node, f"{what}: unknown provider {provider!r} (known: aws-kms, local)"
            )
        key_id = self.opt_string(entries, "key_id", what)
        if key_id is not None and not key_id.strip():
            self.fail(entries["key_id"][1], f"{what}: key_id must not be empty")
        if provider == "aws-kms" and key_id is None:
            key_id = KekSpec.default_key_id(prefix, category)
        typed: KekProvider = "aws-kms" if provider == "aws-kms" else "local"
        return KekSpec(typed, key_id)

    # --- fields -------------------------------------------------------------------------

    def field(self, category: str, key: ScalarNode, node: Node) -> tuple[FieldSpec, int | None]:
        name = key.value
        if not FIELD_NAME.match(name):
            self.fail(key, f"{category}: bad field name {name!r} (expected [a-z][a-z0-9_]*)")
        what = f"{category}: field {name!r}"
        entries = self.entries(
            node,
            what,
            allowed=("description", "source", "generator", "template", "validators", "dummy"),
            required=("source",),
            anchor=key,
        )
        source_node = entries["source"][1]
        source_text = self.string(source_node, f"{what}: source")
        if source_text not in ("generated", "provided", "derived"):
            self.fail(
                source_node,
                f"{what}: unknown source {source_text!r} (expected generated, provided or derived)",
            )
        source: FieldSource = (
            "generated"
            if source_text == "generated"
            else "derived"
            if source_text == "derived"
            else "provided"
        )
        for option, owner in (
            ("generator", "generated"),
            ("template", "derived"),
            ("dummy", "provided"),
        ):
            if option in entries and source != owner:
                self.fail(entries[option][0], f"{what}: a {source} field cannot have a {option}")
        if source == "generated" and "generator" not in entries:
            self.fail(key, f"{what}: a generated field needs a generator")
        if source == "derived" and "template" not in entries:
            self.fail(key, f"{what}: a derived field needs a template")
        generator = None
        if "generator" in entries:
            generator = self.generator(what, entries["generator"][1])
        template: str | None = None
        template_line: int | None = None
        if "template" in entries:
            template_node = entries["template"][1]
            template = self.string(template_node, f"{what}: template")
            template_line = _line(template_node)
            try:
                parse_template(template)
            except InvalidRequest as exc:
                self.fail(template_node, f"{what}: {exc.message}")
        validators: tuple[ValidatorSpec, ...] = ()
        if "validators" in entries:
            validators = self.validators(what, entries["validators"][1])
        dummy: str | None = None
        if "dummy" in entries:
            dummy_node = entries["dummy"][1]
            dummy = self.text(dummy_node, f"{what}: dummy")
        description = self.opt_string(entries, "description", what) or ""
        try:
            spec = FieldSpec(
                name,
                description,
                source=source,
                generator=generator,
                template=template,
                validators=validators,
                dummy=dummy,
            )
        except CatalogError as exc:  # pragma: no cover - shape rules are checked above
            self.fail(key, exc.problem)
        if generator is not None and validators:
            problem = _generator_problem(spec)
            if problem is not None:
                self.fail(entries["generator"][1], f"{what}: {problem}")
        if source == "provided":
            sample = dummy if dummy is not None else f"{DUMMY_MARKER}-{name}-0123456789abcdef"
            rule = spec.check(sample)
            if rule is not None:
                if dummy is not None:
                    self.fail(entries["dummy"][1], f"{what}: the dummy fails a validator: {rule}")
                self.fail(
                    key,
                    f"{what}: the generic development dummy fails a validator ({rule}); "
                    "declare a dummy that passes",
                )
        return spec, template_line

    def generator(self, what: str, node: Node) -> GeneratorSpec:
        kind, kind_node, params = self.kind_and_params(node, f"{what}: generator")
        generator = GENERATORS.get(kind)
        if generator is None:
            known = ", ".join(sorted(GENERATORS))
            self.fail(kind_node, f"{what}: unknown generator kind {kind!r} (known: {known})")
        values = self.params(what, f"generator {kind!r}", generator.params, params)
        try:
            generator.resolve(values)
        except InvalidRequest as exc:
            self.fail(node, f"{what}: {exc.message}")
        return GeneratorSpec(kind, values)

    def validators(self, what: str, node: Node) -> tuple[ValidatorSpec, ...]:
        if not isinstance(node, SequenceNode):
            self.fail(node, f"{what}: validators must be a list")
        specs: list[ValidatorSpec] = []
        for item in node.value:
            kind, kind_node, params = self.kind_and_params(item, f"{what}: validator")
            validator = VALIDATORS.get(kind)
            if validator is None:
                known = ", ".join(sorted(VALIDATORS))
                self.fail(kind_node, f"{what}: unknown validator kind {kind!r} (known: {known})")
            values = self.params(what, f"validator {kind!r}", validator.params, params)
            try:
                validator.resolve(values)
            except InvalidRequest as exc:
                self.fail(item, f"{what}: {exc.message}")
            specs.append(ValidatorSpec(kind, values))
        return tuple(specs)

    def kind_and_params(self, node: Node, what: str) -> tuple[str, Node, Entries]:
        """``kind`` or ``{kind: ..., <param>: ...}``."""
        if isinstance(node, ScalarNode) and node.tag == _STR:
            return node.value, node, {}
        if not isinstance(node, MappingNode):
            self.fail(node, f"{what} must be a kind name or a mapping with a kind")
        entries = self.entries(node, what)
        if "kind" not in entries:
            self.fail(node, f"{what}: missing required key 'kind'")
        kind_node = entries.pop("kind")[1]
        return self.string(kind_node, f"{what}: kind"), kind_node, entries

    def params(
        self, what: str, owner: str, specs: tuple[Parameter, ...], entries: Entries
    ) -> dict[str, ParamValue]:
        values: dict[str, ParamValue] = {}
        for name, (key, node) in entries.items():
            raw = self.scalar(node, f"{what}: {owner} parameter {name!r}")
            try:
                values[name] = check_param(owner, specs, name, raw)
            except InvalidRequest as exc:
                self.fail(key, f"{what}: {exc.message}")
        return values

    def check_templates(
        self, what: str, fields: list[FieldSpec], template_lines: dict[str, int]
    ) -> None:
        """Templates read declared fields only, not themselves, and form no cycle."""
        declared = {f.name for f in fields}
        reads: dict[str, frozenset[str]] = {}
        for f in fields:
            if f.template is None:
                continue
            line = template_lines[f.name]
            template = parse_template(f.template)
            for ref in sorted(template.fields):
                if ref == f.name:
                    self.fail(line, f"{what}: field {f.name!r}: template reads the field itself")
                if ref not in declared:
                    self.fail(
                        line, f"{what}: field {f.name!r}: template reads undeclared field {ref!r}"
                    )
            reads[f.name] = template.fields

        def reaches(start: str, target: str, seen: set[str]) -> bool:
            for dep in reads.get(start, frozenset()):
                if dep == target:
                    return True
                if dep in reads and dep not in seen:
                    seen.add(dep)
                    if reaches(dep, target, seen):
                        return True
            return False

        for f in fields:
            if f.name in reads and reaches(f.name, f.name, set()):
                cycle = sorted(
                    n for n in reads if reaches(n, n, set()) and reaches(f.name, n, set())
                )
                self.fail(
                    template_lines[f.name],
                    f"{what}: templates form a cycle through {', '.join(cycle)}",
                )

    # --- scalars and mappings ---------------------------------------------------------

    def entries(
        self,
        node: Node,
        what: str,
        *,
        allowed: tuple[str, ...] | None = None,
        required: tuple[str, ...] = (),
        anchor: Node | None = None,
    ) -> Entries:
        """Keys of a mapping node: strings, no duplicates, only ``allowed``, all ``required``."""
        if not isinstance(node, MappingNode):
            self.fail(node, f"{what} must be a mapping")
        found: Entries = {}
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                self.fail(key, f"{what}: merge keys (<<) are not supported")
            if not isinstance(key, ScalarNode) or key.tag != _STR:
                self.fail(key, f"{what}: keys must be strings")
            name = key.value
            if name in found:
                first = _line(found[name][0])
                self.fail(key, f"{what}: duplicate key {name!r} (first on line {first})")
            if allowed is not None and name not in allowed:
                self.fail(key, f"{what}: unknown key {name!r} (allowed: {', '.join(allowed)})")
            found[name] = (key, value)
        for name in required:
            if name not in found:
                self.fail(anchor or node, f"{what}: missing required key {name!r}")
        return found

    def scalar(self, node: Node, what: str) -> ParamValue:
        if not isinstance(node, ScalarNode) or node.tag not in (_STR, _INT, _FLOAT, _BOOL):
            self.fail(node, f"{what} must be a string, integer, number or boolean")
        value = self.construct(node, what)
        assert isinstance(value, int | float | str)
        return value

    def typed(self, node: Node, tag: str, what: str, expected: str) -> object:
        if not isinstance(node, ScalarNode) or node.tag != tag:
            self.fail(node, f"{what} must be {expected}")
        return self.construct(node, what)

    def construct(self, node: ScalarNode, what: str) -> object:
        """The Python value of a scalar; a problem with it (such as an integer of more
        digits than Python converts, ``sys.get_int_max_str_digits``) names its line."""
        try:
            return self._constructor.construct_object(node)
        except ValueError:
            self.fail(node, f"{what}: the number is too large")
        except ConstructorError:  # pragma: no cover - resolved tags always construct
            self.fail(node, f"{what}: unreadable value")

    def string(self, node: Node, what: str) -> str:
        value = self.typed(node, _STR, what, "a string")
        assert isinstance(value, str)
        return value

    def text(self, node: Node, what: str) -> str:
        """A string, or an integer written as text (``dummy: 5432``)."""
        if isinstance(node, ScalarNode) and node.tag == _INT:
            return str(node.value)
        return self.string(node, what)

    def integer(self, node: Node, what: str) -> int:
        value = self.typed(node, _INT, what, "an integer")
        assert isinstance(value, int)
        return value

    def boolean(self, node: Node, what: str) -> bool:
        value = self.typed(node, _BOOL, what, "true or false")
        assert isinstance(value, bool)
        return value

    def opt_string(self, entries: Entries, key: str, what: str) -> str | None:
        if key not in entries:
            return None
        return self.string(entries[key][1], f"{what}: {key}")
