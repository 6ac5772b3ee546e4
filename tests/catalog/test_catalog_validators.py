"""Validators: positive and negative cases per kind; rules never contain the value."""

from __future__ import annotations

import pytest

from medsecrets.catalog import (
    VALIDATORS,
    Category,
    FieldSpec,
    GeneratorSpec,
    RotationPolicy,
    ValidatorSpec,
)
from medsecrets.catalog.validators import (
    MAX_REGEX_VALUE,
    ParamValue,
    build_validator,
    shannon_entropy,
)
from medsecrets.errors import InvalidRequest, ValidationError

from .conftest import CANARY

Params = dict[str, ParamValue]

# kind, params, values that pass, values that fail (each failing value embeds the canary
# where the format allows, so the rule text can be checked for leaks)
CASES: list[tuple[str, Params, list[str], list[str]]] = [
    (
        "min-length",
        {"length": 32},
        ["x" * 32, "y" * 100],
        ["", CANARY, "x" * 31],
    ),
    (
        "max-length",
        {"length": 20},
        ["", CANARY, "x" * 20],
        [CANARY * 2, "x" * 21],
    ),
    (
        "hex",
        {"length": 64},
        ["a" * 64, "0123456789abcdefABCDEF" * 2 + "0" * 20],
        ["a" * 63, "a" * 65, "g" * 64, CANARY, "", " " + "a" * 63, "٣" * 64],
    ),
    ("hex", {}, ["abc", "DEADBEEF"], ["", "xyz", CANARY]),
    ("hex", {"case": "lower"}, ["deadbeef"], ["DEADBEEF", CANARY]),
    (
        "base64",
        {"min_bytes": 32},
        ["A" * 44, "QUJD" * 11, "A" * 43 + "="],
        ["QUJD", "A" * 43, "A" * 42 + "==" + "A", CANARY + "=", "A" * 40 + "-_-_", "é" * 44],
    ),
    (
        "base64",
        {"urlsafe": True, "padding": False},
        ["AB-_", "ABC", "AB"],
        ["AB+/", "ABC=", "A", CANARY + "!"],
    ),
    (
        "entropy",
        {"bits_per_char": 3.0},
        ["abcdefgh", "a8f3c9e1b2d47650"],
        ["aaaaaaaa", "abababab", "", CANARY[:1] * 9],
    ),
    (
        "entropy",
        {"total_bits": 128},
        ["0123456789abcdef" * 3],
        ["0123456789abcdef", "a" * 1000, CANARY],
    ),
    (
        "prefix",
        {"prefix": "sk-"},
        ["sk-abc", "sk-"],
        ["SK-abc", "xsk-abc", CANARY],
    ),
    (
        "openai-key",
        {},
        ["sk-" + "A" * 48, "sk-proj-" + "aB3_-" * 20, "sk-svcacct-" + "x" * 40],
        [
            "sk-" + "A" * 31,
            "sk-ant-api03-" + "A" * 48,
            "pk-" + "A" * 48,
            "sk-" + "A" * 40 + "!",
            "sk-" + CANARY + "!" * 20,
            "sk-" + "A" * 40 + "\n",
        ],
    ),
    (
        "anthropic-key",
        {},
        ["sk-ant-api03-" + "aB3_-" * 19, "sk-ant-" + "x" * 32],
        ["sk-" + "A" * 48, "sk-ant-" + "x" * 31, "sk-ant-" + "x" * 40 + "=", CANARY * 3],
    ),
    (
        "google-api-key",
        {},
        ["AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "AIza" + "_-" * 17 + "x"],
        [
            "AIza" + "x" * 34,
            "AIza" + "x" * 36,
            "aiza" + "x" * 35,
            "AIza" + "x" * 34 + "!",
            "AIza" + CANARY + "." * (35 - len(CANARY)),
        ],
    ),
    (
        "url",
        {},
        ["https://hooks.slack.com/services/T/B/X", "https://user:pw@host.example:8443/p?q=1"],
        [
            "http://hooks.slack.com/x",
            "https://",
            "https:///path",
            "hooks.slack.com/services",
            "https://host:99999/",
            "https://host:port/",
            "https://ho st/",
            "https://host/\x00",
            "javascript:alert(1)",
            "https://" + CANARY + " x",
            "",
            "https://hooks.sl\u0430ck.com/services/T/B/X",  # Cyrillic a
            "https://hooks.slack.com\uff0eevil.io/x",  # full-width full stop
            "https://b\u00fccher.example/x",  # an IDN not in its xn-- form
            "https://hooks.slack.com:0/x",
            "https://[1.2.3.4]/x",
            "https://-bad-.example/x",
        ],
    ),
    (
        "url",
        {},
        ["https://xn--bcher-kva.example/x", "https://[2001:db8::1]:8443/x", "https://10.0.0.1/"],
        ["https://999.1.1.1/"],
    ),
    (
        "url",
        {"schemes": "postgresql, postgres"},
        ["postgresql://u:p@localhost:5432/db", "postgres://db.internal/x"],
        ["https://localhost/", "mysql://localhost/"],
    ),
    (
        "regex",
        {"pattern": "[a-z]+_[0-9]{2}"},
        ["abc_12"],
        ["abc_123", "xabc_12!", "ABC_12", CANARY],
    ),
    (
        "regex",
        {"pattern": "[a-z]*"},
        ["a" * MAX_REGEX_VALUE],
        ["a" * (MAX_REGEX_VALUE + 1)],
    ),
    (
        "host",
        {},
        [
            "localhost",
            "postgres-service",
            "db.example.com",
            "db.example.com.",
            "xn--bcher-kva.example",
            "10.0.0.1",
            "[::1]",
            "[2001:db8::5]",
            "[::ffff:10.0.0.1]",
        ],
        [
            "[:::::]",
            "[1.2.3.4]",
            "[fe80::1%25eth0]",
            "[]",
            "db..example",
            "-db",
            "db-",
            "db_1",
            "999.1.1.1",
            "1.2.3",
            "sl\u0430ck.com",
            "b\u00fccher.example",
            "db.example.com\n",
            "x" * 64,
            ".".join(["a" * 63] * 4 + ["b"]),  # 257 characters
            "",
            CANARY + "_",
        ],
    ),
    (
        "text",
        {},
        ["medessence", "Pässwörter für SMTP", "a b", "x"],
        [
            "",
            "   ",
            "\t",
            "medessence\x00",
            "a\nb",
            "value\n",
            "value\r",
            "a\x7fb",
            "in\u200bvisible",
            "soft\u00adhyphen",
            "line\u2028break",
            CANARY + "\x00",
        ],
    ),
    (
        "port",
        {},
        ["1", "5432", "65535"],
        ["0", "65536", "05432", "-1", "+80", "54 32", "", "http", "٥٤٣٢", CANARY],
    ),
    (
        "password-classes",
        {},
        ["aB3!"],
        ["ab3!", "AB3!", "aB!!", "aB3x", CANARY.lower()],
    ),
    (
        "password-classes",
        {"symbols": False, "upper": False},
        ["ab3"],
        ["abc", "123"],
    ),
]


@pytest.mark.parametrize(
    ("kind", "params", "good", "bad"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_validator_cases(kind: str, params: Params, good: list[str], bad: list[str]) -> None:
    validator = build_validator(kind, params)
    assert validator.kind == kind
    for value in good:
        assert validator.check(value) is None, value
    for value in bad:
        rule = validator.check(value)
        assert rule is not None, value
        assert rule
        if value:
            assert value not in rule
        assert CANARY not in rule


def test_every_kind_is_covered_by_cases() -> None:
    assert {c[0] for c in CASES} == set(VALIDATORS)


def test_regex_rule_uses_the_description_when_given() -> None:
    validator = build_validator("regex", {"pattern": "[0-9]+", "description": "digits only"})
    assert validator.check("12a") == "must be digits only"


def test_rules_state_their_limits() -> None:
    assert build_validator("min-length", {"length": 32}).check("x") == (
        "must be at least 32 characters long"
    )
    assert build_validator("prefix", {"prefix": "AIza"}).check("x") == "must start with 'AIza'"


def test_shannon_entropy() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abab") == pytest.approx(1.0)
    assert shannon_entropy("0123456789abcdef") == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("kind", "params", "named"),
    [
        ("min-length", {}, "length"),
        ("min-length", {"length": -1}, "length"),
        ("min-length", {"length": "8"}, "length"),
        ("min-length", {"length": True}, "length"),
        ("min-length", {"length": 8, "extra": 1}, "extra"),
        ("hex", {"case": "mixed"}, "case"),
        ("base64", {"min_bytes": 0}, "min_bytes"),
        ("entropy", {}, "bits_per_char"),
        ("entropy", {"bits_per_char": "high"}, "bits_per_char"),
        ("prefix", {"prefix": ""}, "prefix"),
        ("url", {"schemes": "HTTPS"}, "schemes"),
        ("url", {"schemes": "https,"}, "schemes"),
        ("regex", {"pattern": "(unclosed"}, "pattern"),
        ("regex", {"pattern": "(a+)+b?"}, "backtrack"),
        ("regex", {"pattern": "(a|ab)*c"}, "backtrack"),
        ("regex", {"pattern": "([a-z]+\\.)+com"}, "backtrack"),
        ("regex", {"pattern": "(?:x(?:a*)?)+"}, "backtrack"),
        ("regex", {}, "pattern"),
        ("port", {"max": 10}, "max"),
        (
            "password-classes",
            {"lower": False, "upper": False, "digits": False, "symbols": False},
            "class",
        ),
    ],
)
def test_bad_parameters_are_refused_naming_them(kind: str, params: Params, named: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_validator(kind, params)
    assert named in str(info.value)


def test_unknown_kind() -> None:
    with pytest.raises(InvalidRequest) as info:
        build_validator("luhn")
    assert "luhn" in str(info.value)
    assert "min-length" in str(info.value)


def test_bool_and_int_parameters_are_not_confused_by_the_cache() -> None:
    assert build_validator("min-length", {"length": 1}).check("") is not None
    with pytest.raises(InvalidRequest):
        build_validator("min-length", {"length": True})


def test_entropy_accepts_an_integer_floor() -> None:
    assert build_validator("entropy", {"bits_per_char": 2}).check("abcd") is None


@pytest.mark.parametrize(
    "spec",
    [
        ValidatorSpec("min-length", {"length": 100}),
        ValidatorSpec("max-length", {"length": 5}),
        ValidatorSpec("hex", {"length": 64}),
        ValidatorSpec("base64", {}),
        ValidatorSpec("entropy", {"total_bits": 10_000}),
        ValidatorSpec("prefix", {"prefix": "sk-"}),
        ValidatorSpec("openai-key", {}),
        ValidatorSpec("anthropic-key", {}),
        ValidatorSpec("google-api-key", {}),
        ValidatorSpec("url", {}),
        ValidatorSpec("regex", {"pattern": "[0-9]+"}),
        ValidatorSpec("port", {}),
        ValidatorSpec("password-classes", {}),
    ],
    ids=lambda s: s.kind,
)
def test_validation_errors_never_contain_the_value(spec: ValidatorSpec) -> None:
    category = Category(
        "canaries",
        "",
        fields=(
            FieldSpec(
                "secret", source="generated", generator=GeneratorSpec("uuid"), validators=(spec,)
            ),
        ),
        rotation=RotationPolicy(30, "manual"),
    )
    canary = CANARY.upper()  # no lower-case letter: password-classes fails too
    value = f"{canary} !@# {canary}"
    with pytest.raises(ValidationError) as info:
        category.validate({"secret": value})
    error = info.value
    assert error.field == "secret"
    for text in (str(error), repr(error), error.rule, error.message, repr(error.args)):
        assert canary not in text
    with pytest.raises(ValidationError) as info:
        category.build({"secret": value}, development=True)
    assert canary not in str(info.value)
