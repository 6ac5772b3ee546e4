"""A bounded mixed-load soak of a real server, then the audit promises checked on its trail.

Four client threads (fixed seeds, 250 operations each: no wall-clock bound) write new
versions of secrets (planted canary values), read them (current and by version), read
metadata, list, delete and restore, create, look up, use and revoke tokens, and send
bad requests (an unknown route, malformed JSON, a wrong, revoked or missing token, an
oversized body, another content type, a bad query), against a server with a file
device and a database device, with one worker and with two, on SQLite (a dev server)
and on PostgreSQL (a throwaway cluster; skipped without its binaries, as every
``postgres`` test is). After a graceful stop, ``tests.support.soak.check_trail``
reads the trail with the project's readers and CLI: one request and one response
record per answer in both devices, no 5xx but a documented 503, no connection error,
no traceback, no planted value anywhere (audit files, the database's files, server
log), a revoked token refused (on PostgreSQL another worker may serve it for 5 s, as
api.md says), every chain verifies from its start with the checkpoint key, and
``who-read``/``search`` list exactly the successful reads of the shared secret.
``benchmarks/soak.py`` runs the same for a given time (``--postgres``: on PostgreSQL).

The transport's own refusals (unknown route, malformed JSON, oversized body, another
content type) are recorded too (``test_transport_refusals_are_recorded``; they were not).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from medsecrets.testing.pgcluster import PostgresCluster
from medsecrets.testing.serverproc import ServerProcess
from tests.storage.conftest import _require_pg_binaries
from tests.support.soak import (
    SHARED,
    TRANSPORT_REFUSALS,
    check_trail,
    leak_forms,
    leaked,
    run_load,
    soak_server,
)

OPERATIONS = {
    "write",
    "read",
    "read_version",
    "metadata",
    "list",
    "delete",
    "restore",
    "token_create",
    "token_lookup",
    "token_use",
    "token_revoke",
}


@pytest.fixture(scope="module")
def soak_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for this module's PostgreSQL soaks (each soak
    gets its own database)."""
    _require_pg_binaries()
    with PostgresCluster() as cluster:
        yield cluster


@pytest.mark.parametrize(
    "storage", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
def test_a_mixed_load_keeps_every_audit_promise(
    tmp_path: Path, workers: int, storage: str, request: pytest.FixtureRequest
) -> None:
    cluster = request.getfixturevalue("soak_cluster") if storage == "postgres" else None
    with soak_server(tmp_path, workers=workers, cluster=cluster) as (server, token, key, store):
        result = run_load(server.addr, token, seed=20261206, threads=4, ops=250)
    assert server.returncode == 0  # stopped gracefully: every record written
    # the load did what it says: every operation answered 2xx at least once
    succeeded = {op for (op, status) in result.statuses() if 200 <= status < 300}
    assert succeeded >= OPERATIONS, sorted(OPERATIONS - succeeded)
    assert {op for op, _ in result.statuses()} >= TRANSPORT_REFUSALS
    assert len(result.shared_reads) >= 10
    if workers == 2:  # both workers wrote a chain
        assert len(list((tmp_path / "data" / "audit").glob("audit-*.jsonl"))) == 2
    problems = check_trail(
        tmp_path / "data", server.log_text(), result, public_key=key, storage=store
    )
    assert problems == []


def test_transport_refusals_are_recorded(tmp_path: Path) -> None:
    """audit.md: "Every request to a medsecrets server and every response is recorded"
    (only what the HTTP layer cannot parse is exempt, api.md)."""
    with ServerProcess(tmp_path / "data", log_dir=tmp_path / "logs") as server:
        assert server.token is not None
        h = {"X-Medsecrets-Token": server.token, "Content-Type": "application/json"}
        sent = {
            "refused-unknown": ("GET", "/v1/nothing/here", b""),
            "refused-malformed": ("PUT", f"/v1/secrets/{SHARED}", b'{"fields": {'),
            "refused-oversized": ("PUT", f"/v1/secrets/{SHARED}", b" " * 1_048_600),
        }
        for rid, (method, url, body) in sent.items():
            answer = httpx.request(
                method, server.addr + url, headers={**h, "X-Request-Id": rid}, content=body
            )
            assert 400 <= answer.status_code < 500
        media = httpx.put(
            f"{server.addr}/v1/secrets/{SHARED}",
            headers={**h, "Content-Type": "text/plain", "X-Request-Id": "refused-media"},
            content=b"x",
        )
        assert media.status_code == 415
    records = [
        json.loads(line)
        for line in (tmp_path / "data" / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    for rid in [*sent, "refused-media"]:
        kinds = sorted(r["kind"] for r in records if r.get("request_id") == rid)
        assert kinds == ["request", "response"], rid


def test_the_leak_scan_finds_every_form_and_nothing_else() -> None:
    """``check_trail``'s indexed scan answers as ``form in text`` would."""
    values = ["sk-Soak" + "A1b2" * 10, "ms.revokedTOKEN_abc-123456789012345678901234", "short"]
    for value in values:
        for form in leak_forms(value):
            text = b"\x00" * 5000 + b"sk-Soak" + form + b"\xff" * 10
            assert leaked(values, [("blob", text)]) == [("blob", value)], form
    near = leak_forms(values[0])[0][:-1] + b"!" + b"sk-" * 100 + b"c2s736ms."
    assert leaked(values, [("blob", near)]) == []
