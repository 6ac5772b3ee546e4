"""Canary values written through the store appear nowhere they should not.

Checked: the SQLite file (and its WAL), every file of a PostgreSQL data
directory, captured log output, reprs, and the text of every error raised
while handling them. Each canary is searched in raw, base64, hex and
JSON-escaped forms.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from medsecrets.errors import MedsecretsError
from medsecrets.schema.seal import KeyFileSealConfig
from medsecrets.storage.base import StorageBackend
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore
from medsecrets.testing.pgcluster import PostgresCluster, find_pg_bin
from tests.conftest import in_ci
from tests.support.leaks import leak_forms


def assert_absent(blob: bytes, canaries: list[str], where: str) -> None:
    for canary in canaries:
        for form in leak_forms(canary):
            assert form not in blob, f"canary found in {where}"


def exercise(store: SecretStore, caplog: pytest.LogCaptureFixture) -> tuple[list[str], str]:
    """Write canaries every way the store takes values; collect error texts and reprs."""
    caplog.set_level(logging.DEBUG)
    canary = "CANARY-" + secrets.token_hex(16)
    store.initialize(KeyFileSealConfig(str(store.canary_dir / "unseal.key")))  # type: ignore[attr-defined]
    report = store.provision(
        "production",
        provided={
            "external-services": {
                "smtp_password": canary,
                "slack_webhook_url": "https://hooks.slack.com/services/T000/B000/XXXX",
                "sentry_dsn": "https://abc@o1.ingest.sentry.io/1",
                "monitoring_tokens": canary + "-mon",
                "backup_credentials": canary + "-bak",
            },
            "database": {
                "username": "medessence_prod",
                "host": "db",
                "port": "5432",
                "database": "m",
            },
            "ai-providers": {
                "openai_api_key": "sk-" + "a" * 48,
                "anthropic_api_key": "sk-ant-" + "b" * 90,
                "google_api_key": "AIza" + "c" * 35,
                "azure_cognitive_key": "0123456789abcdef0123456789abcdef",
            },
        },
    )
    canaries = [canary, canary + "-mon", canary + "-bak"]
    # every generated value is a canary too
    for item in report.items:
        fields = store.secrets.get(item.path).fields
        canaries += [v for k, v in fields.items() if len(v) >= 16 and k != "connection_string"]
    texts: list[str] = []
    bad_values = [
        {"smtp_password": canary[:5]},  # too short: validator error must not echo it
        {"not_a_field": canary},
        {"smtp_password": 5},
    ]
    for bad in bad_values:
        with pytest.raises(MedsecretsError) as info:
            store.secrets.put("medessence/production/external-services", bad)  # type: ignore[arg-type]
        texts += [str(info.value), repr(info.value)]
    got = store.secrets.get("medessence/production/external-services")
    texts += [repr(got), str(got), repr(got.fields), repr(store), repr(store.envelope)]
    texts += [repr(store.keys), repr(store.barrier), repr(store.seal_manager)]
    store.rotate_key("external-services")
    store.rewrap()
    store.seal()
    return canaries, "\n".join(texts)


def test_sqlite_file_logs_and_errors_hold_no_canary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SecretStore(SqliteStorage(tmp_path / "store.db"))
    store.canary_dir = tmp_path  # type: ignore[attr-defined]
    canaries, texts = exercise(store, caplog)
    assert len(canaries) > 20
    files = [p for p in tmp_path.iterdir() if p.name.startswith("store.db")]
    assert files
    for path in files:
        assert_absent(path.read_bytes(), canaries, path.name)
    assert_absent(texts.encode(), canaries, "error texts and reprs")
    assert_absent(caplog.text.encode(), canaries, "log output")
    store.close()


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PostgresCluster]:
    if find_pg_bin() is None:
        if in_ci():
            pytest.fail("PostgreSQL binaries (initdb, pg_ctl) are required under CI")
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found")
    with PostgresCluster() as cluster:
        yield cluster


def test_postgres_data_directory_holds_no_canary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, pg_cluster: PostgresCluster
) -> None:
    from medsecrets.storage.postgres import PostgresStorage

    storage: StorageBackend = PostgresStorage(pg_cluster.create_database("canary"))
    store = SecretStore(storage)
    store.canary_dir = tmp_path  # type: ignore[attr-defined]
    canaries, texts = exercise(store, caplog)
    store.close()
    pg_cluster.execute("CHECKPOINT")
    blobs = 0
    for path in pg_cluster.data_dir.rglob("*"):
        if path.is_file():
            assert_absent(path.read_bytes(), canaries, str(path.relative_to(pg_cluster.data_dir)))
            blobs += 1
    assert blobs > 100
    assert_absent(texts.encode(), canaries, "error texts and reprs")
    assert_absent(caplog.text.encode(), canaries, "log output")


def test_the_search_finds_every_form() -> None:
    canary = "CANARY-" + secrets.token_hex(8)
    for form in leak_forms(canary):
        with pytest.raises(AssertionError):
            assert_absent(b"xx" + form + b"yy", [canary], "sample")
