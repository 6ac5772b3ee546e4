"""A real server process on a real PostgreSQL store, through a database outage.

The store's own tests (``tests/storage/test_postgres_outage.py``) show that a frozen or
stopped database fails a store operation within ``storage.timeout``. Here the whole
stack does: a secret read over HTTP while the database is frozen answers ``503
storage_unavailable`` with a JSON body and no secret (not a hang, not a 500), the audit
trail records the refusal, and once the database answers again the same server serves
the secret without a restart.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from medsecrets.catalog import default_catalog
from medsecrets.testing.pgcluster import PostgresCluster
from medsecrets.testing.serverproc import ServerProcess
from tests.storage.conftest import _require_pg_binaries

pytestmark = pytest.mark.postgres

PATH = "medessence/production/auth"
#: A read that takes longer has hung (the store's bound is storage.timeout = 1 s).
HANG = 60.0


def test_a_read_while_postgres_is_frozen_is_a_503_and_the_server_recovers(
    tmp_path: Path,
) -> None:
    _require_pg_binaries()
    with PostgresCluster() as pg:
        dsn = pg.create_database("medsecrets")
        config = tmp_path / "server.toml"
        config.write_text(
            f'tls_disable = true\n[storage]\ntype = "postgres"\ndsn = "{dsn}"\ntimeout = 1\n'
        )
        config.chmod(0o600)
        audit = tmp_path / "data" / "audit" / "audit.jsonl"  # ServerProcess's audit file
        with ServerProcess(
            tmp_path / "data",
            dev=False,
            extra_args=["--config", str(config)],
            log_dir=tmp_path / "logs",
        ) as server:
            init = httpx.post(
                f"{server.addr}/v1/sys/init",
                json={"seal": {"type": "shamir", "shares": 1, "threshold": 1}},
            )
            assert init.status_code == 200, init.text
            headers = {"X-Medsecrets-Token": init.json()["root_token"]}
            fields = default_catalog().category("auth").build({}, development=False)
            url = f"{server.addr}/v1/secrets/{PATH}"
            written = httpx.put(url, json={"fields": fields}, headers=headers)
            assert written.status_code == 200, written.text
            assert httpx.get(url, headers=headers).status_code == 200

            with pg.frozen():
                answer = httpx.get(url, headers=headers, timeout=HANG)
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "storage_unavailable"
            for value in fields.values():
                assert str(value) not in answer.text

            deadline = time.monotonic() + 90
            while (again := httpx.get(url, headers=headers, timeout=HANG)).status_code != 200:
                assert again.status_code == 503, again.text
                assert time.monotonic() < deadline, "the server did not serve again"
                time.sleep(0.2)
            assert again.json()["fields"] == fields
        refused = [
            line
            for line in audit.read_text().splitlines()
            if '"kind":"response"' in line and '"status":503' in line and PATH in line
        ]
        assert refused, "the refused read is not in the audit trail"
