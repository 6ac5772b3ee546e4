"""Honeytokens in the catalog: declared decoy paths, validated with a file and line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from medsecrets.catalog import default_catalog, load_catalog, parse_catalog
from medsecrets.errors import CatalogError

BASE = """\
version: 1
prefix: acme
categories:
  database:
    rotation: {interval_days: 30, strategy: manual}
    fields:
      password: {source: provided}
  canary:
    honeytoken: true
    rotation: {interval_days: 3650, strategy: manual}
    fields:
      token: {source: provided}
"""


def test_declared_paths_and_honeytoken_categories_are_honeytokens() -> None:
    text = BASE + "honeytokens:\n  - production/database/legacy-admin\n  - staging/database\n"
    catalog = parse_catalog(text, source="x")
    assert catalog.honeytokens == {"production/database/legacy-admin", "staging/database"}
    assert catalog.is_honeytoken("acme/production/database/legacy-admin")
    assert catalog.is_honeytoken("acme/staging/database")
    assert catalog.is_honeytoken("acme/production/canary")  # a honeytoken category
    assert catalog.is_honeytoken("acme/dev/canary/anything")
    assert not catalog.is_honeytoken("acme/production/database")
    assert not catalog.is_honeytoken("acme/production/database/legacy-admin2")
    assert not catalog.is_honeytoken("acme/staging/database/primary")
    assert not catalog.is_honeytoken("acmex/production/database/legacy-admin")
    assert not catalog.is_honeytoken("other/production/database/legacy-admin")
    assert not catalog.is_honeytoken("acme")
    assert not catalog.is_honeytoken("")


def test_the_default_catalog_declares_none_but_shows_how() -> None:
    catalog = default_catalog()
    assert catalog.honeytokens == frozenset()
    assert not catalog.is_honeytoken("medessence/production/database/legacy-admin")
    text = Path(catalog.source).read_text()
    assert "honeytokens: []" in text
    assert "#     - production/database/legacy-admin" in text
    uncommented = text.replace("honeytokens: []", "").replace("#   honeytokens:", "honeytokens:")
    uncommented = uncommented.replace("#     - ", "  - ")
    example = parse_catalog(uncommented, source="example")
    assert example.is_honeytoken("medessence/production/database/legacy-admin")


def test_the_model_checks_paths_too() -> None:
    catalog = parse_catalog(BASE, source="m")
    assert dataclasses.replace(catalog, honeytokens=frozenset({"prod/database/x"})).honeytokens
    with pytest.raises(CatalogError, match="unknown category 'nope'"):
        dataclasses.replace(catalog, honeytokens=frozenset({"prod/nope/x"}))


BAD = {
    "not-a-list": ("honeytokens: production/database/x  #<\n", "must be a list"),
    "not-a-string": ("honeytokens:\n  - [a, b]  #<\n", "must be a string"),
    "one-segment": ("honeytokens:\n  - production  #<\n", "expected <environment>/<category>"),
    "leading-slash": (
        "honeytokens:\n  - /production/database/x  #<\n",
        "expected <environment>/<category>",
    ),
    "empty-segment": (
        "honeytokens:\n  - production//database  #<\n",
        "expected <environment>/<category>",
    ),
    "trailing-slash": (
        "honeytokens:\n  - production/database/  #<\n",
        "expected <environment>/<category>",
    ),
    "unknown-category": (
        "honeytokens:\n  - production/payments/x  #<\n",
        "unknown category 'payments'",
    ),
    "duplicate": (
        "honeytokens:\n  - production/database/x\n  - production/database/x  #<\n",
        "duplicate 'production/database/x' (first on line",
    ),
    # paths no secret can have (the store's naming rules): such a decoy could never fire
    "dot-dot": ("honeytokens:\n  - production/database/../x  #<\n", "segment '..'"),
    "space": ("honeytokens:\n  - production/database/x y  #<\n", "segment 'x y'"),
    "wildcard": ("honeytokens:\n  - '*/database'  #<\n", "segment '*'"),
    "bad-environment": ("honeytokens:\n  - Prod/database/x  #<\n", "environment 'Prod'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_honeytokens_name_file_and_line(tmp_path: Path, case: str) -> None:
    tail, problem = BAD[case]
    text = BASE + tail
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    expected = next(i for i, line in enumerate(text.splitlines(), 1) if "#<" in line)
    assert info.value.file == str(path)
    assert info.value.line == expected, info.value
    assert problem in info.value.problem
