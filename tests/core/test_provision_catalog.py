"""Provisioning through the core: non-ASCII values, nothing written on failure, the dummy
report, and the category selection."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from medsecrets.errors import InvalidRequest, ValidationError
from medsecrets.store import SecretStore

Call = Callable[..., object]

PRODUCTION: dict[str, dict[str, str]] = {
    "database": {
        "username": "medessence_prod",
        "host": "postgres-service",
        "port": "5432",  # equals the field's declared development dummy
        "database": "medessence",  # likewise
    },
    "ai-providers": {
        "openai_api_key": "sk-" + "A" * 40,
        "anthropic_api_key": "sk-ant-" + "B" * 40,
        "google_api_key": "AIza" + "C" * 35,
        "azure_cognitive_key": "d" * 32,
    },
    "external-services": {
        "smtp_password": "Pässwörter-für-SMTP",
        "slack_webhook_url": "https://hooks.slack.com/services/T/B/X",
        "sentry_dsn": "https://k@o1.ingest.sentry.io/1",
        "monitoring_tokens": "Pässwörter",
        "backup_credentials": "cred",
    },
}


def _items(report: object) -> list[dict[str, object]]:
    assert isinstance(report, dict)
    items = report["items"]
    assert isinstance(items, list)
    return items


def _stored(store: SecretStore, environment: str) -> list[str]:
    return [m.path for m in store.secrets.list(prefix=f"medessence/{environment}/").items]


def test_non_ascii_values_are_provisioned(call: Call, root: str, store: SecretStore) -> None:
    report = call("provision", root, body={"environment": "production", "provided": PRODUCTION})
    assert {i["status"] for i in _items(report)} == {"created"}
    fields = store.secrets.get("medessence/production/external-services").fields
    assert fields["smtp_password"] == "Pässwörter-für-SMTP"
    dev = call(
        "provision",
        root,
        body={
            "environment": "dev",
            "categories": ["database"],
            "provided": {"database": {"database": "médical"}},
        },
    )
    assert [i["status"] for i in _items(dev)] == ["created"]


def test_a_failing_provision_writes_nothing(call: Call, root: str, store: SecretStore) -> None:
    bad = {**PRODUCTION, "external-services": {**PRODUCTION["external-services"]}}
    bad["external-services"]["slack_webhook_url"] = "not a url"  # the last category fails
    with pytest.raises(ValidationError) as info:
        call("provision", root, body={"environment": "production", "provided": bad})
    assert info.value.field == "slack_webhook_url"
    assert _stored(store, "production") == []


def test_the_report_names_only_the_dummies_provisioning_filled(call: Call, root: str) -> None:
    report = call(
        "provision",
        root,
        body={"environment": "production", "categories": ["database"], "provided": PRODUCTION},
    )
    assert [i["dummy_fields"] for i in _items(report)] == [[]]  # real values, never dummies
    dev = call(
        "provision",
        root,
        body={
            "environment": "dev",
            "categories": ["database"],
            "provided": {"database": {"username": "localhost"}},  # another field's dummy
        },
    )
    assert [i["dummy_fields"] for i in _items(dev)] == [["database", "host", "port"]]


def test_empty_or_repeated_category_selections_are_refused(
    call: Call, root: str, store: SecretStore
) -> None:
    with pytest.raises(InvalidRequest, match="at least one category"):
        call("provision", root, body={"environment": "dev", "categories": []})
    with pytest.raises(InvalidRequest, match="'auth' is listed more than once"):
        call(
            "provision",
            root,
            body={"environment": "dev", "categories": ["auth", "database", "auth"]},
        )
    assert _stored(store, "dev") == []
