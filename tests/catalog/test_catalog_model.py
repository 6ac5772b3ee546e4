"""The catalog model: build and validate semantics, integrity checks, lookups."""

from __future__ import annotations

import dataclasses

import pytest

from medsecrets.catalog import (
    Catalog,
    Category,
    FieldSpec,
    GeneratorSpec,
    KekSpec,
    RotationPolicy,
    ValidatorSpec,
    is_dummy,
)
from medsecrets.catalog.model import GENERATION_ATTEMPTS
from medsecrets.errors import CatalogError, NotFoundError, ValidationError

from .conftest import CANARY, SeededRandomSource

HEX64 = (ValidatorSpec("hex", {"length": 64}),)


def _category(*fields: FieldSpec, strategy: str = "regenerate") -> Category:
    return Category("svc", "a service", fields=fields, rotation=RotationPolicy(30, strategy))


def _svc() -> Category:
    return _category(
        FieldSpec("user", source="provided", dummy="dev_user"),
        FieldSpec(
            "token", source="provided", validators=(ValidatorSpec("min-length", {"length": 8}),)
        ),
        FieldSpec(
            "key", source="generated", generator=GeneratorSpec("aes-256-key"), validators=HEX64
        ),
        FieldSpec("dsn", source="derived", template="svc://{user|urlquote}:{key}@{host_port}"),
        FieldSpec("host_port", source="derived", template="{host}:443"),
        FieldSpec("host", source="provided", dummy="localhost"),
    )


def test_build_order_and_derived_chain() -> None:
    svc = _svc()
    values = svc.build({"user": "a@b", "token": "t" * 8, "host": "h"}, development=False)
    assert tuple(values) == svc.field_names()  # declaration order
    assert values["host_port"] == "h:443"
    assert values["dsn"] == f"svc://a%40b:{values['key']}@h:443"


def test_given_generated_values_are_kept() -> None:
    key = "ab" * 32
    values = _svc().build({"key": key}, development=True)
    assert values["key"] == key


def test_generate_missing_false_refuses_missing_generated_fields() -> None:
    with pytest.raises(ValidationError) as info:
        _svc().build({}, development=True, generate_missing=False)
    assert info.value.field == "key"
    assert _svc().build({"key": "cd" * 32}, development=True, generate_missing=False)["key"] == (
        "cd" * 32
    )


def test_unknown_given_field_is_named() -> None:
    with pytest.raises(ValidationError) as info:
        _svc().build({"pasword": CANARY}, development=True)
    assert info.value.field == "pasword"
    assert "not declared by category 'svc'" in info.value.rule
    assert CANARY not in str(info.value)


def test_non_string_values_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        _svc().build({"token": 12345678}, development=True)  # type: ignore[dict-item]
    assert info.value.rule == "must be a string"


def test_given_derived_value_must_match() -> None:
    svc = _svc()
    values = svc.build({}, development=True)
    again = svc.build(
        {k: values[k] for k in ("user", "token", "key", "host", "dsn")}, development=True
    )
    assert again == values
    with pytest.raises(ValidationError) as info:
        svc.build({"dsn": CANARY}, development=True)
    assert info.value.field == "dsn"
    assert CANARY not in str(info.value)


def test_validate() -> None:
    svc = _svc()
    values = svc.build({}, development=True)
    svc.validate(values)
    with pytest.raises(ValidationError) as info:
        svc.validate({k: v for k, v in values.items() if k != "token"})
    assert info.value.field == "token"
    assert info.value.rule == "required: missing"
    svc.validate({"token": "long enough"}, complete=False)
    with pytest.raises(ValidationError) as info:
        svc.validate(dict(values, host="elsewhere"))  # host_port no longer matches
    assert info.value.field == "host_port"
    assert "derived" in info.value.rule
    with pytest.raises(ValidationError) as info:
        svc.validate(dict(values, key=CANARY))
    assert info.value.field == "key"
    assert CANARY not in str(info.value)


def test_validate_reports_the_first_failure_in_declaration_order() -> None:
    svc = _svc()
    values = dict(svc.build({}, development=True), token="short", key="nothex")
    with pytest.raises(ValidationError) as info:
        svc.validate(values)
    assert info.value.field == "token"


def test_problems_checks_each_derived_field_on_its_own() -> None:
    svc = _svc()
    values = svc.build({"user": "u", "token": "t" * 8, "host": "h"}, development=False)
    stale = {**values, "token": "short", "host_port": "h:8443", "extra": "x"}
    assert list(svc.problems(stale)) == [
        ("extra", "not declared by category 'svc'"),
        ("token", "must be at least 8 characters long"),
        ("dsn", "derived: must equal its template's rendering"),
        ("host_port", "derived: must equal its template's rendering"),
    ]
    with pytest.raises(ValidationError) as info:
        svc.validate(stale)
    assert info.value.field == "extra"
    partial = {"dsn": "svc://nothing-to-compare"}  # the fields it reads are absent
    assert list(svc.problems(partial, complete=False)) == []


def test_dummies() -> None:
    svc = _svc()
    values = svc.build({}, development=True, source=SeededRandomSource(3))
    assert values["user"] == "dev_user"
    assert is_dummy(values["token"])
    assert values["token"].startswith("DUMMY-DEV-ONLY-token-")
    assert svc.is_dummy(values["user"])
    assert svc.is_dummy(values["user"], field="user")
    assert not svc.is_dummy(values["user"], field="host")
    assert not svc.is_dummy("real_user", field="user")
    assert not svc.is_dummy(values["key"])
    with pytest.raises(NotFoundError):
        svc.is_dummy("x", field="nope")


def test_is_dummy_compares_non_ascii_values() -> None:
    svc = _svc()
    assert not svc.is_dummy("Pässwörter")
    assert not svc.is_dummy("Pässwörter", field="user")
    accented = _category(FieldSpec("name", source="provided", dummy="médical"), strategy="manual")
    assert accented.is_dummy("médical", field="name")


def test_dummy_fields_are_the_provided_fields_build_fills() -> None:
    svc = _svc()
    given = {"user": "localhost"}  # another field's declared dummy: still a real value
    assert svc.dummy_fields(given, development=True) == ("host", "token")
    assert svc.dummy_fields({}, development=False) == ()


class _ZerosFirst(SeededRandomSource):
    """Bytes of zeros for the first ``zeros`` draws (they fail an entropy floor), then random."""

    def __init__(self, zeros: int) -> None:
        super().__init__(7)
        self.zeros = zeros

    def token_bytes(self, n: int) -> bytes:
        if self.zeros > 0:
            self.zeros -= 1
            return bytes(n)
        return super().token_bytes(n)


def _keyed() -> Category:
    validators = (*HEX64, ValidatorSpec("entropy", {"bits_per_char": 2.5}))
    key = FieldSpec(
        "key", source="generated", generator=GeneratorSpec("aes-256-key"), validators=validators
    )
    return _category(key)


def test_build_draws_a_generated_value_again_when_it_fails_the_validators() -> None:
    values = _keyed().build({}, development=False, source=_ZerosFirst(3))
    assert values["key"] != "0" * 64


def test_build_gives_up_on_a_generator_that_keeps_failing() -> None:
    with pytest.raises(ValidationError) as info:
        _keyed().build({}, development=False, source=_ZerosFirst(GENERATION_ATTEMPTS))
    assert info.value.field == "key"
    assert f"no value in {GENERATION_ATTEMPTS} draws" in info.value.rule
    assert "character entropy" in info.value.rule


def test_seeded_builds_are_reproducible() -> None:
    svc = _svc()
    a = svc.build({}, development=True, source=SeededRandomSource(9))
    b = svc.build({}, development=True, source=SeededRandomSource(9))
    assert a == b


def test_field_lookup() -> None:
    svc = _svc()
    assert svc.field("key").generator == GeneratorSpec("aes-256-key")
    with pytest.raises(NotFoundError) as info:
        svc.field("nope")
    assert "user, token, key" in str(info.value)


def test_values_are_immutable() -> None:
    svc = _svc()
    with pytest.raises(dataclasses.FrozenInstanceError):
        svc.name = "other"  # type: ignore[misc]
    spec = GeneratorSpec("password", {"length": 30})
    with pytest.raises(TypeError):
        spec.params["length"] = 8  # type: ignore[index]
    assert not hasattr(svc, "__dict__")


@pytest.mark.parametrize(
    ("build", "problem"),
    [
        (lambda: FieldSpec("x", source="generated"), "needs a generator"),
        (lambda: FieldSpec("x", source="provided", template="{y}"), "cannot have a template"),
        (lambda: FieldSpec("x", source="derived"), "needs a template"),
        (lambda: FieldSpec("x", source="derived", template="{y}", dummy="d"), "dummy"),
        (lambda: FieldSpec("Bad"), "bad field name"),
        (lambda: FieldSpec("x", source="magic"), "unknown source"),  # type: ignore[arg-type]
        (lambda: RotationPolicy(0), "interval_days"),
        (lambda: RotationPolicy(True), "interval_days"),
        (lambda: RotationPolicy(30, "sometimes"), "unknown strategy"),
        (lambda: RotationPolicy(30, "regenerate-keep-previous"), "keep_previous"),
        (lambda: KekSpec("vault"), "unknown provider"),  # type: ignore[arg-type]
        (_category, "at least one field"),
        (
            lambda: _category(
                FieldSpec("a", source="provided"),
                FieldSpec("a", source="provided"),
                strategy="manual",
            ),
            "duplicate field 'a'",
        ),
        (
            lambda: _category(FieldSpec("a", source="derived", template="{b}"), strategy="manual"),
            "undeclared field 'b'",
        ),
        (
            lambda: _category(
                FieldSpec("a", source="derived", template="{b}"),
                FieldSpec("b", source="derived", template="{a}"),
                strategy="manual",
            ),
            "cycle",
        ),
        (lambda: _category(FieldSpec("a", source="provided")), "needs a generated field"),
        (
            lambda: _category(
                FieldSpec(
                    "a", source="generated", generator=GeneratorSpec("password", {"length": 2})
                )
            ),
            "'length'",
        ),
        (
            lambda: _category(
                FieldSpec("a", source="provided", validators=(ValidatorSpec("nope"),)),
                strategy="manual",
            ),
            "unknown validator kind",
        ),
        (
            lambda: _category(
                FieldSpec("a", source="provided", dummy="short", validators=HEX64),
                strategy="manual",
            ),
            "dummy fails a validator",
        ),
        (lambda: Category("Bad Name", "", fields=(), rotation=RotationPolicy(1)), "bad name"),
    ],
)
def test_integrity_checks(build: object, problem: str) -> None:
    assert callable(build)
    with pytest.raises(CatalogError) as info:
        build()
    assert problem in info.value.problem


def test_catalog_lookups() -> None:
    svc = _svc()
    catalog = Catalog(
        categories={"svc": svc}, development_environments=frozenset({"dev"}), source="mem"
    )
    assert catalog.prefix == "medessence"
    assert catalog.names() == ("svc",)
    assert catalog.category("svc") is svc
    with pytest.raises(NotFoundError) as info:
        catalog.category("databse")
    assert "databse" in str(info.value)
    assert "known: svc" in str(info.value)
    with pytest.raises(NotFoundError):
        catalog.secret_path("dev", "databse")
    assert catalog.is_development("dev")
    assert not catalog.is_development("prod")


def test_catalog_checks_its_keys() -> None:
    with pytest.raises(CatalogError):
        Catalog(categories={"other": _svc()}, development_environments=frozenset(), source="m")
    with pytest.raises(CatalogError):
        Catalog(prefix="Bad!", categories={}, development_environments=frozenset(), source="m")


def test_kek_default_alias() -> None:
    svc = dataclasses.replace(_svc(), kek=KekSpec("aws-kms"))
    catalog = Catalog(categories={"svc": svc}, development_environments=frozenset(), source="m")
    assert catalog.kek_key_id("svc") == "alias/medessence-svc"
    assert KekSpec.default_key_id("medessence", "auth") == "alias/medessence-auth"


def test_reprs_hold_no_values() -> None:
    svc = _svc()
    svc.build({"token": CANARY}, development=True)
    assert CANARY not in repr(svc)
