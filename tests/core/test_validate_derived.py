"""``GET /v1/validate`` through the core: a stale derived field is reported even when other
fields fail too (each derived field is checked against its template on its own)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from medsecrets.auth.tokens import TokenStore
from medsecrets.catalog import default_catalog, parse_catalog
from medsecrets.clock import ManualClock
from medsecrets.core import Core, Request
from medsecrets.schema.seal import KeyFileSealConfig
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore

PATH = "medessence/production/database"
STRICT_PASSWORD = """\
          - {kind: min-length, length: 16}
          - {kind: password-classes, symbols: false}
          - {kind: entropy, bits_per_char: 3.0}"""


def _older_catalog_text() -> str:
    """The default catalog before two changes: a lenient password rule, no urlquote on it."""
    resource = importlib.resources.files("medsecrets.catalog").joinpath("default.yaml")
    text = resource.read_text(encoding="utf-8")
    older = text.replace(STRICT_PASSWORD, "          - {kind: min-length, length: 1}")
    older = older.replace("{password|urlquote}", "{password}")
    assert older.count("{password}") == 1 and STRICT_PASSWORD not in older
    return older


def test_a_stale_derived_field_is_reported_with_other_problems(
    tmp_path: Path, clock: ManualClock
) -> None:
    older = parse_catalog(_older_catalog_text(), source="older.yaml")
    db = tmp_path / "store.db"
    store = SecretStore(SqliteStorage(db), clock=clock, catalog=older)
    store.initialize(KeyFileSealConfig(str(tmp_path / "unseal.key")))
    given = {"username": "u", "host": "h", "port": "5432", "database": "d", "password": "p@ss"}
    store.secrets.put(PATH, older.category("database").build(given, development=False))
    store.close()

    store = SecretStore(SqliteStorage(db), clock=clock, catalog=default_catalog())
    store.auto_unseal()
    try:
        tokens = TokenStore(store.barrier, clock=clock)
        core = Core(store, tokens)
        root = tokens.create_root()[0].reveal()
        report = _validate(core, root)
    finally:
        store.close()
    assert report["valid"] is False
    assert report["problems"] == [
        {"field": "password", "rule": "must be at least 16 characters long"},
        {"field": "connection_string", "rule": "derived: must equal its template's rendering"},
    ]


def _validate(core: Core, token: str) -> dict[str, object]:
    request = Request(
        method="GET", route="secrets.validate", path=PATH, token=token, body=None, query={}
    )
    body = core.handle(request).body
    assert isinstance(body, dict)
    return body
