"""The packaged default catalog: exactly the strategy's categories, and working builds."""

from __future__ import annotations

import urllib.parse

import psycopg.conninfo
import pytest

from medsecrets.catalog import Catalog, default_catalog, is_dummy
from medsecrets.errors import ValidationError

from .conftest import CANARY

EXPECTED_FIELDS = {
    "database": (
        "username",
        "password",
        "host",
        "port",
        "database",
        "connection_string",
        "encryption_key",
    ),
    "ai-providers": (
        "openai_api_key",
        "anthropic_api_key",
        "google_api_key",
        "azure_cognitive_key",
    ),
    "medical-encryption": (
        "phi_encryption_key",
        "phi_encryption_iv",
        "medical_record_key",
        "audit_log_encryption_key",
        "file_encryption_key",
    ),
    "auth": ("jwt_secret", "jwt_refresh_secret", "session_secret", "encryption_key"),
    "external-services": (
        "smtp_password",
        "slack_webhook_url",
        "sentry_dsn",
        "monitoring_tokens",
        "backup_credentials",
    ),
}

EXPECTED_ROTATION_DAYS = {
    "database": 90,
    "ai-providers": 180,
    "medical-encryption": 365,
    "auth": 30,
    "external-services": 180,
}

PROVIDED_VALUES = {
    "database": {
        "username": "medessence_prod",
        "host": "postgres-service",
        "port": "5432",
        "database": "medessence",
    },
    "ai-providers": {
        "openai_api_key": "sk-proj-" + "A1b2C3d4E5" * 5,
        "anthropic_api_key": "sk-ant-api03-" + "x_Y-z0" * 15,
        "google_api_key": "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
        "azure_cognitive_key": "0123456789abcdef0123456789ABCDEF",
    },
    "external-services": {
        "smtp_password": "correct horse battery",
        "slack_webhook_url": "https://hooks.slack.com/services/T000/B000/XXXX",
        "sentry_dsn": "https://abc123@o42.ingest.sentry.io/4242",
        "monitoring_tokens": "dd-token-1,dd-token-2",
        "backup_credentials": '{"access_key": "AKIA...", "secret": "..."}',
    },
}


def test_loads_exactly_the_five_strategy_categories(catalog: Catalog) -> None:
    assert catalog.names() == tuple(EXPECTED_FIELDS)
    assert catalog.prefix == "medessence"
    assert catalog.source.endswith("default.yaml")


@pytest.mark.parametrize("name", list(EXPECTED_FIELDS))
def test_each_category_has_exactly_the_strategy_fields(catalog: Catalog, name: str) -> None:
    assert catalog.category(name).field_names() == EXPECTED_FIELDS[name]


def test_rotation_periods_follow_the_strategy(catalog: Catalog) -> None:
    days = {n: catalog.category(n).rotation.interval_days for n in catalog.names()}
    assert days == EXPECTED_ROTATION_DAYS


def test_rotation_strategies(catalog: Catalog) -> None:
    assert catalog.category("database").rotation.strategy == "regenerate"
    medical = catalog.category("medical-encryption").rotation
    assert medical.keep_previous is True
    assert medical.strategy == "regenerate-keep-previous"
    assert catalog.category("ai-providers").rotation.strategy == "manual"
    assert catalog.category("external-services").rotation.strategy == "manual"


def test_every_category_uses_a_local_kek_by_default(catalog: Catalog) -> None:
    for name in catalog.names():
        assert catalog.category(name).kek.provider == "local"
        assert catalog.kek_key_id(name) is None


def test_development_environments(catalog: Catalog) -> None:
    for env in ("development", "dev", "local", "test"):
        assert catalog.is_development(env)
    for env in ("production", "staging", "prod", "Development"):
        assert not catalog.is_development(env)


def test_secret_paths(catalog: Catalog) -> None:
    assert catalog.secret_path("production", "database") == "medessence/production/database"


def test_default_catalog_is_cached() -> None:
    assert default_catalog() is default_catalog()


def test_field_sources(catalog: Catalog) -> None:
    db = catalog.category("database")
    assert db.field("username").source == "provided"
    assert db.field("username").dummy == "medessence_dev"
    assert db.field("password").source == "generated"
    assert db.field("connection_string").source == "derived"
    for name in ("host", "port", "database"):
        assert db.field(name).source == "provided"
    assert {f.source for f in catalog.category("ai-providers").fields} == {"provided"}
    assert {f.source for f in catalog.category("external-services").fields} == {"provided"}
    assert {f.source for f in catalog.category("medical-encryption").fields} == {"generated"}
    assert {f.source for f in catalog.category("auth").fields} == {"generated"}


@pytest.mark.parametrize("name", list(EXPECTED_FIELDS))
def test_development_build_is_complete_valid_and_dummies_recognisable(
    catalog: Catalog, name: str
) -> None:
    category = catalog.category(name)
    values = category.build({}, development=True)
    assert tuple(values) == category.field_names()
    for spec in category.fields:
        value = values[spec.name]
        assert isinstance(value, str)
        assert value
        for validator in spec.validators:
            assert validator.check(value) is None, (spec.name, validator.kind)
        if spec.source == "provided":
            assert category.is_dummy(value, field=spec.name), spec.name
        else:
            assert not category.is_dummy(value, field=spec.name), spec.name
    category.validate(values)


def test_dummies_without_a_declared_dummy_carry_the_marker(catalog: Catalog) -> None:
    values = catalog.category("external-services").build({}, development=True)
    for name in ("smtp_password", "monitoring_tokens", "backup_credentials"):
        assert is_dummy(values[name])
        assert values[name].startswith(f"DUMMY-DEV-ONLY-{name}-")
    # every ai-providers dummy but the (hex-only) azure key carries the marker too
    ai = catalog.category("ai-providers").build({}, development=True)
    assert all(is_dummy(ai[n]) for n in ("openai_api_key", "anthropic_api_key", "google_api_key"))


def test_generic_dummies_differ_between_builds(catalog: Catalog) -> None:
    ext = catalog.category("external-services")
    first = ext.build({}, development=True)["smtp_password"]
    second = ext.build({}, development=True)["smtp_password"]
    assert first != second


def test_real_values_are_not_dummies(catalog: Catalog) -> None:
    for name, given in PROVIDED_VALUES.items():
        category = catalog.category(name)
        for field, value in given.items():
            if field == "port":  # 5432 is both the real port and the dummy
                continue
            if field == "database":
                continue
            assert not category.is_dummy(value, field=field), field


@pytest.mark.parametrize("name", ["database", "ai-providers", "external-services"])
def test_production_refuses_missing_provided_fields(catalog: Catalog, name: str) -> None:
    category = catalog.category(name)
    first_provided = next(f.name for f in category.fields if f.source == "provided")
    with pytest.raises(ValidationError) as info:
        category.build({}, development=False)
    assert info.value.field == first_provided
    assert "provided by a person" in info.value.rule
    assert first_provided in str(info.value)


@pytest.mark.parametrize("name", list(EXPECTED_FIELDS))
def test_production_build_with_provided_values(catalog: Catalog, name: str) -> None:
    category = catalog.category(name)
    given = PROVIDED_VALUES.get(name, {})
    values = category.build(given, development=False)
    assert tuple(values) == category.field_names()
    for field, value in given.items():
        assert values[field] == value
    for spec in category.fields:
        if spec.source == "generated":
            assert not is_dummy(values[spec.name])


def test_production_refuses_each_missing_provided_field(catalog: Catalog) -> None:
    db = catalog.category("database")
    for missing in PROVIDED_VALUES["database"]:
        given = {k: v for k, v in PROVIDED_VALUES["database"].items() if k != missing}
        with pytest.raises(ValidationError) as info:
            db.build(given, development=False)
        assert info.value.field == missing


def test_all_generated_categories_build_in_production_without_input(catalog: Catalog) -> None:
    for name in ("medical-encryption", "auth"):
        values = catalog.category(name).build({}, development=False)
        assert len(values) == len(EXPECTED_FIELDS[name])


NASTY_PASSWORD = "p@ss:w/rd?#%[]&=+ é"


def test_connection_string_is_url_safe_with_a_nasty_password(catalog: Catalog) -> None:
    db = catalog.category("database")
    given = dict(PROVIDED_VALUES["database"], password=NASTY_PASSWORD + "Aa1" * 3)
    values = db.build(given, development=False)
    conn = values["connection_string"]
    # nothing URL-reserved survives unquoted in the password part
    userinfo = conn.removeprefix("postgresql://").rsplit("@", 1)[0]
    assert "@" not in userinfo
    assert userinfo.count(":") == 1
    assert "/" not in userinfo
    parts = urllib.parse.urlsplit(conn)
    assert parts.scheme == "postgresql"
    assert urllib.parse.unquote(parts.username or "") == "medessence_prod"
    assert urllib.parse.unquote(parts.password or "") == given["password"]
    assert parts.hostname == "postgres-service"
    assert parts.port == 5432
    assert urllib.parse.unquote(parts.path) == "/medessence"


def test_connection_string_parses_with_libpq(catalog: Catalog) -> None:
    """libpq (through psycopg) reads back exactly the components."""
    db = catalog.category("database")
    given = dict(PROVIDED_VALUES["database"], password=NASTY_PASSWORD + "Aa1" * 3)
    given["database"] = "med/essence db"
    values = db.build(given, development=False)
    parsed = psycopg.conninfo.conninfo_to_dict(values["connection_string"])
    assert parsed == {
        "user": "medessence_prod",
        "password": given["password"],
        "host": "postgres-service",
        "port": "5432",
        "dbname": "med/essence db",
    }


def test_development_connection_string_uses_the_dummies(catalog: Catalog) -> None:
    values = catalog.category("database").build({}, development=True)
    parsed = psycopg.conninfo.conninfo_to_dict(values["connection_string"])
    assert parsed["user"] == "medessence_dev"
    assert parsed["host"] == "localhost"
    assert parsed["port"] == "5432"
    assert parsed["dbname"] == "medessence"
    assert parsed["password"] == values["password"]


def test_bad_provided_value_is_refused_without_leaking_it(catalog: Catalog) -> None:
    ai = catalog.category("ai-providers")
    with pytest.raises(ValidationError) as info:
        ai.build({"openai_api_key": CANARY}, development=True)
    assert info.value.field == "openai_api_key"
    assert CANARY not in str(info.value)
    assert CANARY not in repr(info.value)
    assert CANARY not in info.value.rule


def test_anthropic_key_in_the_openai_field_is_refused(catalog: Catalog) -> None:
    ai = catalog.category("ai-providers")
    key = PROVIDED_VALUES["ai-providers"]["anthropic_api_key"]
    with pytest.raises(ValidationError) as info:
        ai.build({"openai_api_key": key}, development=True)
    assert "Anthropic" in info.value.rule


def test_weak_encryption_key_is_refused(catalog: Catalog) -> None:
    medical = catalog.category("medical-encryption")
    with pytest.raises(ValidationError) as info:
        medical.build({"phi_encryption_key": "0" * 64}, development=True)
    assert info.value.field == "phi_encryption_key"
    assert "entropy" in info.value.rule


FREE_FORM = [
    ("database", "database"),
    ("external-services", "smtp_password"),
    ("external-services", "monitoring_tokens"),
    ("external-services", "backup_credentials"),
]


@pytest.mark.parametrize(("category", "field"), FREE_FORM)
@pytest.mark.parametrize(
    "value",
    ["", "        ", "medessence\x00x", "medessence-tok\n", "a\tlong-enough", "zero\u200bwidth"],
)
def test_free_form_fields_refuse_blank_and_control_characters(
    catalog: Catalog, category: str, field: str, value: str
) -> None:
    rule = catalog.category(category).field(field).check(value)
    assert rule is not None and "printable" in rule


@pytest.mark.parametrize(("category", "field"), FREE_FORM)
def test_free_form_fields_accept_printable_text(
    catalog: Catalog, category: str, field: str
) -> None:
    assert catalog.category(category).field(field).check("Pässwörter_2026") is None


@pytest.mark.parametrize("host", ["[:::::]", "[1.2.3.4]", "[fe80::1%25eth0]", "db..example"])
def test_database_host_refuses_what_the_connection_string_cannot_hold(
    catalog: Catalog, host: str
) -> None:
    given = {"username": "u", "host": host, "port": "5432", "database": "d"}
    with pytest.raises(ValidationError) as info:
        catalog.category("database").build(given, development=False)
    assert info.value.field == "host"


def test_database_host_accepts_a_bracketed_ipv6_address(catalog: Catalog) -> None:
    given = {"username": "u", "host": "[2001:db8::5]", "port": "5432", "database": "d"}
    values = catalog.category("database").build(given, development=False)
    assert "@[2001:db8::5]:5432/" in values["connection_string"]
