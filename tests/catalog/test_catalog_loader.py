"""Loading catalogs: custom categories work; every mistake names its file and line."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from medsecrets.catalog import Catalog, default_catalog, is_dummy, load_catalog, parse_catalog
from medsecrets.errors import CatalogError

VALID = """\
version: 1
prefix: acme
development_environments: [dev, sandbox]
categories:
  payments:
    description: Payment processor credentials
    rotation:
      interval_days: 60
    kek:
      provider: aws-kms
    fields:
      api_key:
        description: processor key
        source: provided
        dummy: pk_test_DUMMY-DEV-ONLY
        validators:
          - {kind: prefix, prefix: pk_}
      webhook_secret:
        source: generated
        generator: {kind: token, bytes: 24}
        validators:
          - {kind: base64, urlsafe: true, padding: false, min_bytes: 24}
      signing_key:
        source: generated
        generator: aes-256-key
        validators: &hex64
          - {kind: hex, length: 64}
      key_copy:
        source: derived
        template: "{signing_key}"
        validators: *hex64
      callback:
        source: derived
        template: "https://pay.example/cb?k={webhook_secret|urlquote}&x={{literal}}"
        validators: [url]
  canary:
    honeytoken: true
    rotation: {interval_days: 3650, strategy: manual}
    kek: {provider: aws-kms, key_id: "arn:aws:kms:us-east-1:111122223333:key/abcd"}
    fields:
      token:
        source: provided
"""


def test_a_custom_catalog_loads_and_builds(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(VALID)
    catalog = load_catalog(path)
    assert catalog.source == str(path)
    assert catalog.names() == ("payments", "canary")
    assert catalog.prefix == "acme"
    assert catalog.is_development("sandbox")
    assert not catalog.is_development("development")
    assert catalog.secret_path("prod", "payments") == "acme/prod/payments"
    payments = catalog.category("payments")
    assert payments.rotation.interval_days == 60
    assert payments.rotation.strategy == "regenerate"
    assert payments.rotation.keep_previous is False
    assert payments.kek.provider == "aws-kms"
    assert payments.kek.key_id == "alias/acme-payments"
    assert catalog.kek_key_id("payments") == "alias/acme-payments"
    assert catalog.kek_key_id("canary") == "arn:aws:kms:us-east-1:111122223333:key/abcd"
    assert catalog.category("canary").honeytoken is True
    assert payments.honeytoken is False
    values = payments.build({}, development=True)
    assert values["api_key"] == "pk_test_DUMMY-DEV-ONLY"
    assert values["key_copy"] == values["signing_key"]
    assert values["callback"].endswith("&x={literal}")
    assert len(values["webhook_secret"]) == 32
    assert is_dummy(catalog.category("canary").build({}, development=True)["token"])


def test_parse_catalog_uses_the_source_name() -> None:
    assert parse_catalog(VALID, source="inline").source == "inline"


def test_default_development_environments() -> None:
    text = VALID.replace("development_environments: [dev, sandbox]\n", "")
    catalog = parse_catalog(text, source="x")
    assert catalog.development_environments == frozenset({"development", "dev", "local", "test"})
    assert catalog.prefix == "acme"


def test_the_default_catalog_round_trips_through_load_catalog(tmp_path: Path) -> None:
    path = Path(default_catalog().source)
    copy = tmp_path / "copy.yaml"
    copy.write_bytes(path.read_bytes())
    loaded = load_catalog(copy)
    assert loaded.categories == default_catalog().categories


BASE = """\
version: 1
categories:
  app:
    description: test
    rotation:
      interval_days: 30
    fields:
      key:
        source: generated
        generator: aes-256-key
        validators:
          - {kind: hex, length: 64}
"""

# Each case: a catalog with one mistake; "#<" marks the line the error must name.
BAD: dict[str, tuple[str, str]] = {
    "reserved-prefix": (
        """\
        version: 1
        prefix: sys  #<
        categories:
          app:
            fields: {x: {source: provided}}
        """,
        "'sys' is reserved",
    ),
    "yaml-syntax": (
        """\
        version: 1
        categories:
          app:
            rotation: {interval_days: 30
            fields: {}  #<
        """,
        "YAML syntax error",
    ),
    "bad-indentation": (
        """\
        version: 1
        categories:
          app:
            rotation:
              interval_days: 30
             fields:  #<
        """,
        "YAML syntax error",
    ),
    "tab-indentation": (
        "version: 1\ncategories:\n\tapp: {}  #<\n",
        "YAML syntax error",
    ),
    "top-level-list": (
        """\
        - version: 1  #<
        """,
        "must be a mapping",
    ),
    "unknown-top-level-key": (
        BASE + "extends: default  #<\n",
        "unknown key 'extends'",
    ),
    "missing-version": (
        """\
        categories:  #<
          app: {}
        """,
        "missing required key 'version'",
    ),
    "unsupported-version": (
        BASE.replace("version: 1", "version: 2  #<"),
        "unsupported catalog version",
    ),
    "unknown-field-key": (
        BASE.replace("generator: aes-256-key", "generater: aes-256-key  #<"),
        "unknown key 'generater'",
    ),
    "unknown-category-key": (
        BASE.replace("    description: test", "    descripton: test  #<"),
        "unknown key 'descripton'",
    ),
    "interval-wrong-type": (
        BASE.replace("interval_days: 30", "interval_days: ninety  #<"),
        "interval_days must be an integer",
    ),
    "interval-zero": (
        BASE.replace("interval_days: 30", "interval_days: 0  #<"),
        "between 1 and 3650",
    ),
    "interval-too-long": (
        BASE.replace("interval_days: 30", "interval_days: 100000  #<"),
        "between 1 and 3650",
    ),
    "interval-bool": (
        BASE.replace("interval_days: 30", "interval_days: yes  #<"),
        "must be an integer",
    ),
    "unknown-strategy": (
        BASE.replace("interval_days: 30", "interval_days: 30\n      strategy: yolo  #<"),
        "unknown strategy 'yolo'",
    ),
    "keep-previous-contradiction": (
        BASE.replace(
            "interval_days: 30",
            "interval_days: 30\n      strategy: regenerate-keep-previous\n"
            "      keep_previous: false  #<",
        ),
        "needs keep_previous: true",
    ),
    "unknown-generator": (
        BASE.replace("generator: aes-256-key", "generator: aes-512-key  #<"),
        "unknown generator kind 'aes-512-key'",
    ),
    "unknown-generator-in-mapping": (
        BASE.replace(
            "generator: aes-256-key", "generator:\n          kind: rot13  #<\n          length: 3"
        ),
        "unknown generator kind 'rot13'",
    ),
    "unknown-validator": (
        BASE.replace("- {kind: hex, length: 64}", "- {kind: luhn}  #<"),
        "unknown validator kind 'luhn'",
    ),
    "bad-generator-param-range": (
        BASE.replace(
            "generator: aes-256-key",
            "generator:\n          kind: password\n          length: 3  #<",
        ).replace("- {kind: hex, length: 64}", "- {kind: min-length, length: 1}"),
        "parameter 'length' must be at least 8",
    ),
    "unknown-generator-param": (
        BASE.replace(
            "generator: aes-256-key",
            "generator:\n          kind: password\n          lenght: 30  #<",
        ),
        "unknown parameter 'lenght'",
    ),
    "bad-validator-param-type": (
        BASE.replace(
            "- {kind: hex, length: 64}", "- kind: min-length\n            length: long  #<"
        ),
        "parameter 'length' must be an integer",
    ),
    "validator-missing-param": (
        BASE.replace("- {kind: hex, length: 64}", "- min-length  #<"),
        "parameter 'length' is required",
    ),
    "validator-bad-regex": (
        BASE.replace(
            "- {kind: hex, length: 64}", "- kind: regex\n            pattern: '([a-z'  #<"
        ),
        "not a valid regular expression",
    ),
    "validator-cross-check": (
        BASE.replace("- {kind: hex, length: 64}", "- {kind: entropy}  #<"),
        "bits_per_char",
    ),
    "validator-kind-missing": (
        BASE.replace("- {kind: hex, length: 64}", "- {length: 64}  #<"),
        "missing required key 'kind'",
    ),
    "validators-not-a-list": (
        BASE.replace("validators:\n          - {kind: hex, length: 64}", "validators: hex  #<"),
        "validators must be a list",
    ),
    "template-undeclared-field": (
        BASE
        + "      url:\n        source: derived\n"
        + "        template: 'https://{hostname}/x'  #<\n",
        "undeclared field 'hostname'",
    ),
    "template-reads-itself": (
        BASE + "      url:\n        source: derived\n        template: 'x{url}'  #<\n",
        "reads the field itself",
    ),
    "template-cycle": (
        BASE
        + "      a:\n        source: derived\n        template: '{b}-{key}'  #<\n"
        + "      b:\n        source: derived\n        template: '{a}'\n",
        "cycle",
    ),
    "template-syntax": (
        BASE + "      url:\n        source: derived\n        template: 'x{key'  #<\n",
        "unclosed '{'",
    ),
    "template-unknown-filter": (
        BASE + "      url:\n        source: derived\n        template: '{key|shout}'  #<\n",
        "unknown filter 'shout'",
    ),
    "duplicate-field": (
        BASE + "      key:  #<\n        source: provided\n",
        "duplicate key 'key' (first on line 8)",
    ),
    "duplicate-category": (
        BASE + "  app:  #<\n    rotation: {interval_days: 1}\n    fields: {}\n",
        "duplicate key 'app'",
    ),
    "missing-source": (
        BASE + "      other:  #<\n        description: no source\n",
        "missing required key 'source'",
    ),
    "unknown-source": (
        BASE + "      other:\n        source: invented  #<\n",
        "unknown source 'invented'",
    ),
    "generator-on-provided": (
        BASE + "      other:\n        source: provided\n        generator: uuid  #<\n",
        "a provided field cannot have a generator",
    ),
    "generated-without-generator": (
        BASE + "      other:  #<\n        source: generated\n",
        "needs a generator",
    ),
    "dummy-on-generated": (
        BASE.replace("generator: aes-256-key", "generator: aes-256-key\n        dummy: x  #<"),
        "cannot have a dummy",
    ),
    "dummy-fails-validators": (
        BASE
        + "      other:\n        source: provided\n        dummy: sk-short  #<\n"
        + "        validators: [openai-key]\n",
        "the dummy fails a validator",
    ),
    "generic-dummy-fails-validators": (
        BASE + "      other:  #<\n        source: provided\n        validators: [port]\n",
        "declare a dummy",
    ),
    "bad-field-name": (
        BASE + "      Other-Field:  #<\n        source: provided\n",
        "bad field name",
    ),
    "bad-category-name": (
        BASE + "  Bad_Name:  #<\n    rotation: {interval_days: 1}\n    fields: {}\n",
        "bad category name",
    ),
    "no-fields": (
        BASE + "  empty:\n    rotation: {interval_days: 1, strategy: manual}\n    fields: {}  #<\n",
        "at least one field",
    ),
    "regenerate-without-generated-field": (
        BASE
        + "  people:\n    rotation:\n      interval_days: 1\n      strategy: regenerate  #<\n"
        + "    fields:\n      name: {source: provided}\n",
        "needs a generated field",
    ),
    "unknown-kek-provider": (
        BASE.replace("    fields:", "    kek: {provider: azure-kv}  #<\n    fields:", 1),
        "unknown provider 'azure-kv'",
    ),
    "description-wrong-type": (
        BASE.replace("    description: test", "    description: [a, b]  #<"),
        "description must be a string",
    ),
    "honeytoken-wrong-type": (
        BASE.replace("    description: test", "    honeytoken: sometimes  #<"),
        "honeytoken must be true or false",
    ),
    "merge-key": (
        BASE.replace("    description: test", "    <<: {description: x}  #<"),
        "merge keys",
    ),
    "empty-file": ("# nothing here  #<\n", "empty"),
    # values a generator makes must pass the field's own validators
    "generator-versus-hex-length": (
        BASE.replace("generator: aes-256-key", "generator: {kind: hex, bytes: 16}  #<"),
        "a value of the generator fails a validator: must be exactly 64 hexadecimal",
    ),
    "generator-versus-classes": (
        BASE.replace(
            "generator: aes-256-key", "generator: {kind: password, length: 24, symbols: false}  #<"
        ).replace("{kind: hex, length: 64}", "{kind: password-classes}"),
        "a value of the generator fails a validator: must contain at least a symbol",
    ),
    "contradictory-lengths": (
        BASE.replace(
            "generator: aes-256-key", "generator: {kind: password, length: 8}  #<"
        ).replace(
            "{kind: hex, length: 64}",
            "{kind: min-length, length: 50}\n          - {kind: max-length, length: 10}",
        ),
        "a value of the generator fails a validator",
    ),
    "generator-fails-often": (  # about 69% of 16-byte tokens score under 4.2 bits
        BASE.replace("generator: aes-256-key", "generator: {kind: token, bytes: 16}  #<").replace(
            "{kind: hex, length: 64}", "{kind: entropy, bits_per_char: 4.2}"
        ),
        "sample values fail",
    ),
    "integer-over-python-digit-limit": (
        BASE.replace("interval_days: 30", "interval_days: 1" + "0" * 4400 + "  #<"),
        "interval_days: the number is too large",
    ),
    "parameter-over-python-digit-limit": (
        BASE.replace("{kind: hex, length: 64}", "{kind: hex, length: 1" + "0" * 4400 + "}  #<"),
        "parameter 'length': the number is too large",
    ),
    "regex-backtracks": (
        BASE.replace(
            "- {kind: hex, length: 64}", "- kind: regex\n            pattern: '(a+)+b?'  #<"
        ),
        "could backtrack catastrophically",
    ),
    "nan-parameter": (
        BASE.replace("{kind: hex, length: 64}", "{kind: entropy, bits_per_char: .nan}  #<"),
        "must be a finite number",
    ),
    "dev-environments-not-a-list": (
        BASE.replace("version: 1", "version: 1\ndevelopment_environments: dev  #<"),
        "must be a list",
    ),
}


def _expected_line(text: str) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), 1) if "#<" in line]
    assert len(lines) == 1, "mark exactly one line"
    return lines[0]


def test_base_is_valid() -> None:
    assert parse_catalog(BASE, source="base").names() == ("app",)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_catalog_names_file_line_and_problem(tmp_path: Path, case: str) -> None:
    text, problem = BAD[case]
    text = textwrap.dedent(text)
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    error = info.value
    assert error.file == str(path)
    assert error.line == _expected_line(text), (error.line, error.problem)
    assert problem in error.problem
    assert str(error).startswith(f"{path}:{error.line}: ")


def test_there_are_many_kinds_of_mistakes() -> None:
    assert len(BAD) >= 10


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert info.value.file == str(path)
    assert "cannot read" in info.value.problem


def test_only_a_regular_file_of_at_most_1_mib_is_read(tmp_path: Path) -> None:
    """A FIFO without a writer blocked the loader for ever; ``/dev/zero`` filled memory."""
    fifo = tmp_path / "catalog.yaml"
    os.mkfifo(fifo)
    with pytest.raises(CatalogError) as info:
        load_catalog(fifo)
    assert "not a regular file" in info.value.problem
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.truncate((1 << 20) + 1)
    with pytest.raises(CatalogError) as info:
        load_catalog(big)
    assert "larger than 1 MiB" in info.value.problem
    assert info.value.file == str(big)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9\n")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert info.value.line == 2


def test_errors_do_not_echo_dummy_or_param_values_needlessly(tmp_path: Path) -> None:
    """A failing dummy is named by line, not repeated in the message."""
    text = BASE + "      other:\n        source: provided\n        dummy: NOT-A-KEY-SECRETISH\n"
    text += "        validators: [openai-key]\n"
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, source="x")
    assert "NOT-A-KEY-SECRETISH" not in str(info.value)


def test_yaml_aliases_are_followed(tmp_path: Path) -> None:
    catalog: Catalog = parse_catalog(VALID, source="x")
    payments = catalog.category("payments")
    assert payments.field("key_copy").validators == payments.field("signing_key").validators


SOMETIMES = BASE.replace("generator: aes-256-key", "generator: {kind: token, bytes: 16}").replace(
    "{kind: hex, length: 64}", "{kind: entropy, bits_per_char: 4.0}"
)  # about 13% of 16-byte tokens score under 4.0 bits per character


def test_a_generator_that_sometimes_fails_gives_one_answer_and_reliable_builds() -> None:
    for _ in range(20):  # the check draws from a fixed seed: the same answer every time
        catalog = parse_catalog(SOMETIMES, source="sometimes.yaml")
    app = catalog.category("app")
    for _ in range(300):  # a failing value is drawn again
        assert app.field("key").check(app.build({}, development=False)["key"]) is None
