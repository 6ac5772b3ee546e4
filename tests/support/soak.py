"""A mixed-load soak of a real server and the audit invariants it must keep.

``soak_config`` writes a server configuration with a file device and a database
device (both required); ``run_load`` drives a running server
(``medsecrets.testing.serverproc.ServerProcess``) from several client threads, each
with its own ``random.Random(seed + thread)`` and a fixed number of operations
(``ops``), or, for the script variant (``benchmarks/soak.py``), until a deadline:
secret writes (new versions, values are planted canaries), reads of the current
version and by version, metadata reads, lists, deletes and restores, token creation,
lookup, use and revocation, and bad requests (unknown routes, malformed JSON,
a wrong or revoked token, an oversized body, another content type, a bad query).
Every request carries its own ``X-Request-Id`` so its records can be found.

``check_trail`` then reads the trail of the stopped server with the project's own
readers (``audit.readback``, ``audit.query``, ``audit.verify``) and the CLI
(``medsecrets audit verify`` / ``who-read`` / ``search --file``) and returns every
broken promise as one line:

- every answer from the application has exactly one request record and one
  response record (by ``request_id``) in every device, the response record with
  the answer's status;
- no 5xx but a documented 503, no connection error, no traceback in the server log;
- a revoked token refused (on PostgreSQL another worker's token cache may serve it
  for ``REVOCATION_LAG_POSTGRES`` seconds after its revocation, as api.md says; such
  a read counts as a successful read; a single worker refuses it at once);
- no planted value (secret values, tokens) in any form (raw, base64, hex,
  JSON-escaped) in an audit file, the database's files (the SQLite file, or every
  file of the PostgreSQL cluster's data directory) or the server log;
- every chain verifies (the CLI, ``--from-start`` with the server's public key;
  the database device's chains with ``audit.verify.verify``), and ``who-read``
  (offline, CLI and library) lists exactly the successful reads of the shared secret.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from medsecrets.audit.database import DatabaseAuditDevice
from medsecrets.audit.query import who_read
from medsecrets.audit.readback import (
    Unreadable,
    database_nodes,
    database_records,
    file_chains,
)
from medsecrets.audit.verify import verify
from medsecrets.storage.base import StorageBackend
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.testing.pgcluster import PostgresCluster
from medsecrets.testing.serverproc import ServerProcess
from tests.support.leaks import leak_forms

__all__ = [
    "DOCUMENTED_503",
    "REVOCATION_LAG_POSTGRES",
    "SHARED",
    "TRANSPORT_REFUSALS",
    "LoadResult",
    "Storage",
    "check_trail",
    "leak_forms",
    "leaked",
    "run_load",
    "soak_config",
    "soak_server",
]

CATEGORY = "medessence/development/ai-providers"
SHARED = f"{CATEGORY}/soak-shared"
"""The secret every thread writes and reads: the ``who-read`` target."""
FIELD = "openai_api_key"
MAX_BODY = 1_048_576
DOCUMENTED_503 = frozenset(
    {"sealed", "not_initialized", "audit_failure", "timeout", "storage_unavailable"}
)
"""The codes of a 503 docs/api.md names; any other 5xx is a bug."""
REVOCATION_LAG_POSTGRES = 5.0
"""api.md: a revoked token is refused by every worker "within 5 s on PostgreSQL"."""
TRANSPORT_REFUSALS = frozenset({"bad_unknown", "bad_malformed", "bad_oversized", "bad_media"})
"""The soak's requests the transport (``api.app``) refuses before the core sees them: an
unknown route (404), a malformed JSON body (400), an oversized body (413), another
content type (415). They are recorded as the core's own refusals are."""


def soak_config(base: Path, *, dsn: str | None = None) -> Path:
    """A server configuration under ``base``: a file device ``file`` (``audit.file``:
    ``ServerProcess`` names the same file for a non-dev server) and a database
    device ``db``, both required, checkpoints every 50 records; with ``dsn``, the
    store (and so the database device) in that PostgreSQL database, TLS off (the
    configuration file is then 0600: it holds the DSN)."""
    config = base / "server.toml"
    storage = ""
    if dsn is not None:
        storage = f'tls_disable = true\n[storage]\ntype = "postgres"\ndsn = "{dsn}"\n'
    config.write_text(
        f"""{storage}
[audit]
checkpoint_every = 50
file = "{base / "data" / "audit" / "audit.jsonl"}"

[[audit.device]]
type = "database"
name = "db"
""",
        encoding="utf-8",
    )
    config.chmod(0o600)
    return config


@dataclass(frozen=True, slots=True)
class Storage:
    """Where a soaked server's store lives: the SQLite file under ``data_dir``, or
    the PostgreSQL database ``dsn`` of ``cluster``; ``workers``: the server's."""

    data_dir: Path
    dsn: str | None = None
    cluster: PostgresCluster | None = None
    workers: int = 1

    @property
    def revocation_lag(self) -> float:
        """How long a revoked token may still be served (api.md, token/revoke: every
        worker refuses it at once on SQLite, within 5 s on PostgreSQL; the revoking
        worker forgets it at once, so one worker refuses it at once on both)."""
        if self.dsn is None or self.workers == 1:
            return 0.0
        return REVOCATION_LAG_POSTGRES

    def open(self) -> StorageBackend:
        """A new backend on the store (the caller closes it)."""
        if self.dsn is None:
            return SqliteStorage(self.data_dir / "medsecrets.db")
        from medsecrets.storage.postgres import PostgresStorage

        return PostgresStorage(self.dsn)

    def files(self) -> list[Path]:
        """Every file the store's bytes may be in: the SQLite file and its journals,
        or every file of the cluster (its data directory, after a ``CHECKPOINT``, and
        its server log)."""
        if self.cluster is None:
            return [p for p in sorted(self.data_dir.glob("medsecrets.db*")) if p.is_file()]
        self.cluster.execute("CHECKPOINT")
        root = self.cluster.data_dir.parent
        return [p for p in sorted(root.rglob("*")) if p.is_file()]


@contextmanager
def soak_server(
    base: Path, *, workers: int, cluster: PostgresCluster | None = None
) -> Iterator[tuple[ServerProcess, str, str, Storage]]:
    """A running server for the soak under ``base`` with ``workers`` workers:
    ``(server, root token, checkpoint public key PEM, storage)``.

    On SQLite it is a dev-mode server. With ``cluster``, the store is a new
    database of that PostgreSQL cluster (dev mode takes only SQLite): a one-worker
    server initialises it (``sys/init``, a key-file seal, so every worker unseals
    itself) and stops, then the soaked server starts on it."""
    data = base / "data"
    if cluster is None:
        storage = Storage(data, workers=workers)
        config = soak_config(base)
        dev = True
    else:
        dsn = cluster.create_database(f"soak_{os.getpid()}_{time.monotonic_ns()}")
        storage = Storage(data, dsn, cluster, workers)
        config = soak_config(base, dsn=dsn)
        dev = False
    args = ["--config", str(config)]
    token = None
    if not dev:
        with ServerProcess(data, dev=False, extra_args=args, log_dir=base / "init-logs") as init:
            seal = {"type": "keyfile", "path": str(base / "unseal.key")}
            done = httpx.post(f"{init.addr}/v1/sys/init", json={"seal": seal}, timeout=60)
            if done.status_code != 200:
                raise RuntimeError(f"sys/init: {done.status_code} {done.text}")
            token = str(done.json()["root_token"])
    with ServerProcess(
        data,
        dev=dev,
        extra_args=args,
        env={"MEDSECRETS_WORKERS": str(workers)},
        log_dir=base / "logs",
    ) as server:
        token = token or server.token
        if token is None:
            raise RuntimeError("the dev server printed no root token")
        key = httpx.get(
            f"{server.addr}/v1/sys/audit/public-key", headers={"X-Medsecrets-Token": token}
        )
        if key.status_code != 200:
            raise RuntimeError(f"audit public key: {key.status_code} {key.text}")
        yield server, token, str(key.json()["public_key_pem"]), storage


@dataclass(slots=True)
class Exchange:
    """One request sent and what came back (``status`` 0: no answer)."""

    request_id: str
    op: str
    status: int = 0
    code: str = ""
    error: str = ""
    app: bool = True
    """Whether the application answered (False: the HTTP layer refused it first)."""
    since_revoked: float | None = None
    """For the use of a revoked token: seconds from its revocation's answer to sending."""


@dataclass(slots=True)
class LoadResult:
    """Everything the load sent and the values it planted."""

    exchanges: list[Exchange] = field(default_factory=list)
    planted: set[str] = field(default_factory=set)
    shared_reads: set[str] = field(default_factory=set)
    """Request ids of the successful reads of ``SHARED``."""

    def merge(self, other: LoadResult) -> None:
        self.exchanges += other.exchanges
        self.planted |= other.planted
        self.shared_reads |= other.shared_reads

    def statuses(self) -> Counter[tuple[str, int]]:
        """How many answers of each operation and status."""
        return Counter((e.op, e.status) for e in self.exchanges)


def _canary(rng: random.Random) -> str:
    """A planted value the ``openai-key`` validator takes (``sk-`` + 40 of [A-Za-z0-9])."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "sk-Soak" + "".join(rng.choice(alphabet) for _ in range(40))


class _Client:
    """One load thread: its own connection, random source and secrets."""

    def __init__(self, addr: str, root: str, seed: int, thread: int, result: LoadResult) -> None:
        self.rng = random.Random(seed * 1000 + thread)
        self.http = httpx.Client(base_url=addr, timeout=30.0)
        self.root = root
        self.tag = f"soak-{seed}-{thread}"
        self.result = result
        self.count = 0
        self.own = [f"{CATEGORY}/soak-{seed}-t{thread}-{k}" for k in range(3)]
        self.versions: dict[str, int] = {}
        self.children: list[tuple[str, str]] = []  # (token, accessor), live
        self.revoked: list[tuple[str, float]] = []  # (token, when its revocation answered)

    # -- plumbing --------------------------------------------------------------------
    def send(
        self,
        op: str,
        method: str,
        url: str,
        *,
        token: str | None = "",
        json_body: object = None,
        content: bytes | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str | int] | None = None,
        revoked_at: float | None = None,
    ) -> tuple[Exchange, dict[str, object]]:
        self.count += 1
        request_id = f"{self.tag}-{self.count}"
        headers = {"X-Request-Id": request_id}
        if token is not None:
            headers["X-Medsecrets-Token"] = token or self.root
        if json_body is not None:
            content = json.dumps(json_body).encode()
        if content is not None:
            headers["Content-Type"] = content_type
        exchange = Exchange(request_id, op)
        if revoked_at is not None:
            exchange.since_revoked = time.monotonic() - revoked_at
        body: dict[str, object] = {}
        try:
            answer = self.http.request(method, url, headers=headers, content=content, params=params)
        except httpx.HTTPError as exc:
            exchange.error = f"{type(exc).__name__}: {exc}"
        else:
            exchange.status = answer.status_code
            exchange.app = answer.headers.get("x-request-id") == request_id
            try:
                parsed = answer.json()
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                body = parsed
                error = parsed.get("error")
                if isinstance(error, dict):
                    exchange.code = str(error.get("code", ""))
        self.result.exchanges.append(exchange)
        return exchange, body

    def close(self) -> None:
        self.http.close()

    # -- operations ------------------------------------------------------------------
    def path(self) -> str:
        return SHARED if self.rng.random() < 0.3 else self.rng.choice(self.own)

    def write(self) -> None:
        path = self.path()
        value = _canary(self.rng)
        self.result.planted.add(value)
        sent, body = self.send(
            "write", "PUT", f"/v1/secrets/{path}", json_body={"fields": {FIELD: value}}
        )
        version = body.get("version")
        if sent.status == 200 and isinstance(version, dict):
            self.versions[path] = int(version["number"])

    def read(self) -> None:
        path = self.path()
        sent, _ = self.send("read", "GET", f"/v1/secrets/{path}")
        if path == SHARED and sent.status == 200:
            self.result.shared_reads.add(sent.request_id)

    def read_version(self) -> None:
        path = self.path()
        version = self.rng.randint(1, max(self.versions.get(path, 1), 1))
        sent, _ = self.send(
            "read_version", "GET", f"/v1/secrets/{path}", params={"version": version}
        )
        if path == SHARED and sent.status == 200:
            self.result.shared_reads.add(sent.request_id)

    def metadata(self) -> None:
        self.send("metadata", "GET", f"/v1/metadata/{self.path()}")

    def list(self) -> None:
        self.send("list", "GET", "/v1/metadata", params={"prefix": f"{CATEGORY}/", "limit": 20})

    def delete(self) -> None:
        path = self.rng.choice(self.own)
        self.send("delete", "DELETE", f"/v1/secrets/{path}", params={"recovery_days": 7})

    def restore(self) -> None:
        self.send("restore", "POST", f"/v1/restore/{self.rng.choice(self.own)}")

    def token_create(self) -> None:
        sent, body = self.send(
            "token_create",
            "POST",
            "/v1/auth/token/create",
            json_body={
                "paths": [CATEGORY],
                "capabilities": ["read", "list"],
                "ttl": 600,
                "display_name": f"{self.tag}-c{self.count + 1}",
            },
        )
        info = body.get("info")
        if sent.status == 200 and isinstance(info, dict):
            token = str(body["token"])
            self.result.planted.add(token)
            self.children.append((token, str(info["accessor"])))

    def token_lookup(self) -> None:
        if self.children:
            _, accessor = self.rng.choice(self.children)
            self.send(
                "token_lookup", "POST", "/v1/auth/token/lookup", json_body={"accessor": accessor}
            )

    def token_use(self) -> None:
        if self.children:
            token, _ = self.rng.choice(self.children)
            sent, _ = self.send("token_use", "GET", f"/v1/secrets/{SHARED}", token=token)
            if sent.status == 200:
                self.result.shared_reads.add(sent.request_id)

    def token_revoke(self) -> None:
        if self.children:
            token, accessor = self.children.pop(self.rng.randrange(len(self.children)))
            self.send(
                "token_revoke", "POST", "/v1/auth/token/revoke", json_body={"accessor": accessor}
            )
            self.revoked.append((token, time.monotonic()))

    def bad(self) -> None:
        kind = self.rng.choice(
            [
                "unknown",
                "malformed",
                "wrong_token",
                "revoked",
                "oversized",
                "media",
                "query",
                "no_token",
            ]
        )
        if kind == "unknown":
            self.send("bad_unknown", "GET", f"/v1/nothing/{self.count}")
        elif kind == "malformed":
            self.send("bad_malformed", "PUT", f"/v1/secrets/{self.path()}", content=b'{"fields": {')
        elif kind == "wrong_token":
            wrong = "ms." + base64.urlsafe_b64encode(self.rng.randbytes(32)).decode().rstrip("=")
            self.result.planted.add(wrong)
            self.send("bad_token", "GET", f"/v1/secrets/{SHARED}", token=wrong)
        elif kind == "revoked" and self.revoked:
            token, revoked_at = self.rng.choice(self.revoked)
            sent, _ = self.send(
                "bad_revoked", "GET", f"/v1/secrets/{SHARED}", token=token, revoked_at=revoked_at
            )
            if sent.status == 200:  # another worker's token cache (PostgreSQL): a read made
                self.result.shared_reads.add(sent.request_id)
        elif kind == "oversized":
            value = _canary(self.rng)
            self.result.planted.add(value)
            filler = "x" * (MAX_BODY + 16)
            self.send(
                "bad_oversized",
                "PUT",
                f"/v1/secrets/{self.path()}",
                json_body={"fields": {FIELD: value, "pad": filler}},
            )
        elif kind == "media":
            self.send(
                "bad_media",
                "PUT",
                f"/v1/secrets/{self.path()}",
                content=b"fields=1",
                content_type="application/x-www-form-urlencoded",
            )
        elif kind == "query":
            self.send("bad_query", "GET", f"/v1/secrets/{SHARED}", params={"version": 0})
        else:
            self.send("bad_no_token", "GET", f"/v1/secrets/{SHARED}", token=None)

    def step(self) -> None:
        ops = (
            (self.write, 14),
            (self.read, 22),
            (self.read_version, 10),
            (self.metadata, 8),
            (self.list, 6),
            (self.delete, 3),
            (self.restore, 3),
            (self.token_create, 5),
            (self.token_lookup, 4),
            (self.token_use, 6),
            (self.token_revoke, 3),
            (self.bad, 16),
        )
        (op,) = self.rng.choices([o for o, _ in ops], weights=[w for _, w in ops])
        op()


def run_load(
    addr: str,
    root_token: str,
    *,
    seed: int,
    threads: int = 4,
    ops: int | None = 150,
    seconds: float | None = None,
) -> LoadResult:
    """Drive the server at ``addr`` from ``threads`` client threads, each making ``ops``
    operations (or, with ``seconds``, as many as fit in that time)."""
    result = LoadResult()
    result.planted.add(root_token)
    setup = _Client(addr, root_token, seed, threads, result)
    try:  # the shared secret exists before any thread reads it
        setup.write()
    finally:
        setup.close()
    deadline = None if seconds is None else time.monotonic() + seconds
    parts = [LoadResult() for _ in range(threads)]
    failures: list[BaseException] = []

    def drive(number: int) -> None:
        client = _Client(addr, root_token, seed, number, parts[number])
        try:
            done = 0
            while (ops is None or done < ops) and (deadline is None or time.monotonic() < deadline):
                client.step()
                done += 1
        except BaseException as exc:  # reported by the caller, never lost in a thread
            failures.append(exc)
        finally:
            client.close()

    workers = [threading.Thread(target=drive, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise failures[0]
    for part in parts:
        result.merge(part)
    return result


# -- checks ----------------------------------------------------------------------------
_KEY = 16
"""How many leading bytes of a form index it in ``leaked``."""


def leaked(values: Iterable[str], exposed: Iterable[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """``(where, value)`` for each value found in any ``leak_forms`` form in a text.

    The same answer as ``form in text`` for every form and text, in one pass of a few
    ``bytes.find`` per text (the forms' distinct 3-byte starts) instead of one per form:
    a PostgreSQL data directory is tens of megabytes and a soak plants thousands of
    forms."""
    index: dict[bytes, list[tuple[bytes, str]]] = {}
    short: list[tuple[bytes, str]] = []
    for value in sorted(set(values)):
        for form in leak_forms(value):
            if len(form) >= _KEY:
                index.setdefault(form[:_KEY], []).append((form, value))
            else:
                short.append((form, value))
    starts = {key[:3] for key in index}
    found: list[tuple[str, str]] = []
    for where, text in exposed:
        hits: set[str] = {value for form, value in short if form in text}
        for start in starts:
            at = text.find(start)
            while at != -1:
                for form, value in index.get(text[at : at + _KEY], ()):
                    if text.startswith(form, at):
                        hits.add(value)
                at = text.find(start, at + 1)
        found += [(where, value) for value in sorted(hits)]
    return found


def _file_device_chains(data_dir: Path) -> list[list[Path]]:
    return [chain for chain in file_chains(data_dir / "audit" / "audit.jsonl") if chain]


def _json_lines(chain: Iterable[Path]) -> Iterator[dict[str, object]]:
    for path in chain:
        for line in path.read_bytes().splitlines():
            if line:
                yield json.loads(line)


def _db_chains(store: Storage) -> dict[str, list[bytes]]:
    storage = store.open()
    try:
        return {
            node: list(DatabaseAuditDevice("db", storage, node=node).records())
            for node in database_nodes(storage, "db")
        }
    finally:
        storage.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSECRETS_")}
    return subprocess.run(
        [sys.executable, "-m", "medsecrets", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _pairing(
    device: str,
    records: Sequence[Mapping[str, object]],
    result: LoadResult,
) -> list[str]:
    """Problems with the request/response records of every exchange in one device."""
    problems: list[str] = []
    by_id: dict[str, list[Mapping[str, object]]] = {}
    for record in records:
        rid = record.get("request_id")
        if isinstance(rid, str) and record.get("kind") in ("request", "response"):
            by_id.setdefault(rid, []).append(record)
    missing: Counter[str] = Counter()
    for exchange in result.exchanges:
        if not exchange.app:
            continue
        found = by_id.get(exchange.request_id, [])
        kinds = Counter(str(r["kind"]) for r in found)
        if kinds != Counter({"request": 1, "response": 1}):
            missing[f"{exchange.op} {exchange.status} {exchange.code}: {dict(kinds)}"] += 1
            continue
        (response,) = [r for r in found if r["kind"] == "response"]
        if response.get("status") != exchange.status:
            problems.append(
                f"{device}: {exchange.request_id} ({exchange.op}) answered"
                f" {exchange.status} but recorded {response.get('status')}"
            )
    for what, count in sorted(missing.items()):
        problems.append(f"{device}: {count} exchange(s) {what} (want one request, one response)")
    return problems


def check_trail(
    data_dir: Path,
    log_text: str,
    result: LoadResult,
    *,
    public_key: str | None = None,
    storage: Storage | None = None,
) -> list[str]:
    """Every broken promise of the run (see module docstring), one line each; ``[]``
    when the trail of the stopped server at ``data_dir`` keeps them all. ``storage``:
    where its store is (default: the SQLite file under ``data_dir``)."""
    store = storage if storage is not None else Storage(data_dir)
    problems: list[str] = []
    for exchange in result.exchanges:
        if exchange.error:
            problems.append(f"{exchange.request_id} ({exchange.op}): {exchange.error}")
        elif exchange.status >= 500 and not (
            exchange.status == 503 and exchange.code in DOCUMENTED_503
        ):
            problems.append(
                f"{exchange.request_id} ({exchange.op}): {exchange.status} {exchange.code}"
            )
        elif (
            exchange.status == 200
            and exchange.since_revoked is not None
            and exchange.since_revoked >= store.revocation_lag
        ):
            problems.append(
                f"{exchange.request_id} ({exchange.op}): a revoked token served"
                f" {exchange.since_revoked:.2f} s after its revocation"
            )
    if "Traceback" in log_text or '"traceback"' in log_text:
        problems.append("a traceback in the server log")
    # the records, by device
    chains = _file_device_chains(data_dir)
    file_records = [r for chain in chains for r in _json_lines(chain)]
    problems += _pairing("file", file_records, result)
    db = _db_chains(store)
    db_records = [json.loads(line) for lines in db.values() for line in lines]
    problems += _pairing("db", db_records, result)
    # leaks
    exposed = [("server log", log_text.encode())]
    exposed += [(str(p.name), p.read_bytes()) for chain in chains for p in chain]
    exposed += [(p.name, p.read_bytes()) for p in store.files()]
    for where, found in leaked(result.planted, exposed):
        problems.append(f"a planted value ({found[:7]}...) in {where}")
    # verification: the CLI on each file chain, the library on each database chain
    key_args: list[str] = []
    if public_key is not None:
        key_file = data_dir.parent / "audit-signing.pub"
        key_file.write_text(public_key, encoding="utf-8")
        key_args = ["--public-key", str(key_file)]
    for chain in chains:
        done = _cli("audit", "verify", "--from-start", *key_args, *map(str, chain))
        if done.returncode != 0:
            problems.append(
                f"audit verify {chain[-1].name}: {done.returncode} {done.stderr.strip()}"
            )
    for node, lines in db.items():
        report = verify(lines)
        if not report.ok:
            problems.append(f"db chain {node}: {report.problem} at seq {report.first_bad_seq}")
    # who-read of the shared secret: every successful read, nothing else
    pattern = str(data_dir / "audit" / "audit*.jsonl")
    done = _cli("audit", "who-read", "--file", pattern, "-o", "json", SHARED)
    if done.returncode != 0:
        problems.append(f"audit who-read: {done.returncode} {done.stderr.strip()}")
    else:
        listed = {str(row["request_id"]) for row in json.loads(done.stdout)["reads"]}
        problems += _compare("who-read (file, CLI)", listed, result.shared_reads)
    listed = {row.request_id for row in who_read(db_records, SHARED)}
    problems += _compare("who-read (db)", listed, result.shared_reads)
    done = _cli(
        "audit", "search", "--file", pattern, "--operation", "secrets.read",
        "--kind", "response", "--outcome", "success", "--path-prefix", SHARED,
        "--limit", "100000", "-o", "json",
    )  # fmt: skip
    if done.returncode != 0:
        problems.append(f"audit search: {done.returncode} {done.stderr.strip()}")
    else:
        found = json.loads(done.stdout)
        rows = found["records"] if isinstance(found, dict) else found
        listed = {str(r["request_id"]) for r in rows if r.get("path") == SHARED}
        problems += _compare("search (file, CLI)", listed, result.shared_reads)
    unreadable = Unreadable()
    for node in db:
        backend = store.open()
        try:
            list(database_records(backend, "db", node, unreadable=unreadable))
        finally:
            backend.close()
    if unreadable.lines:
        problems.append(f"db: {unreadable.lines} unreadable record(s)")
    return problems


def _compare(what: str, listed: set[str], expected: set[str]) -> list[str]:
    problems = []
    if expected - listed:
        problems.append(f"{what}: {len(expected - listed)} successful read(s) not listed")
    if listed - expected:
        problems.append(f"{what}: {len(listed - expected)} listed read(s) not made")
    return problems
