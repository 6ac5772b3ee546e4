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
- no planted value (secret values, tokens) in any form (raw, base64, hex,
  JSON-escaped) in an audit file, the database file or the server log;
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
from collections.abc import Iterable, Iterator, Mapping
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
from medsecrets.storage.sqlite import SqliteStorage

__all__ = [
    "DOCUMENTED_503",
    "SHARED",
    "TRANSPORT_REFUSALS",
    "LoadResult",
    "check_trail",
    "leak_forms",
    "run_load",
    "soak_config",
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
TRANSPORT_REFUSALS = frozenset({"bad_unknown", "bad_malformed", "bad_oversized", "bad_media"})
"""The soak's requests the transport (``api.app``) refuses before the core sees them: an
unknown route (404), a malformed JSON body (400), an oversized body (413), another
content type (415). They are recorded as the core's own refusals are."""


def soak_config(base: Path) -> Path:
    """A server configuration under ``base``: a file device ``file`` and a database
    device ``db``, both required, checkpoints every 50 records."""
    config = base / "server.toml"
    config.write_text(
        f"""
[audit]
checkpoint_every = 50

[[audit.device]]
type = "file"
name = "file"
path = "{base / "data" / "audit" / "audit.jsonl"}"

[[audit.device]]
type = "database"
name = "db"
""",
        encoding="utf-8",
    )
    return config


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
        self.revoked: list[str] = []

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
            self.revoked.append(token)

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
            self.send(
                "bad_revoked", "GET", f"/v1/secrets/{SHARED}", token=self.rng.choice(self.revoked)
            )
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


def leak_forms(value: str) -> list[bytes]:
    """Every form a value could leak in: raw, base64, hex, JSON-escaped."""
    raw = value.encode()
    return [
        raw,
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        raw.hex().encode(),
        json.dumps(value).encode()[1:-1],
        json.dumps(value, ensure_ascii=True).encode("unicode_escape"),
    ]


# -- checks ----------------------------------------------------------------------------
def _file_device_chains(data_dir: Path) -> list[list[Path]]:
    return [chain for chain in file_chains(data_dir / "audit" / "audit.jsonl") if chain]


def _json_lines(chain: Iterable[Path]) -> Iterator[dict[str, object]]:
    for path in chain:
        for line in path.read_bytes().splitlines():
            if line:
                yield json.loads(line)


def _db_chains(data_dir: Path) -> dict[str, list[bytes]]:
    storage = SqliteStorage(data_dir / "medsecrets.db")
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
    records: list[Mapping[str, object]],
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
) -> list[str]:
    """Every broken promise of the run (see module docstring), one line each; ``[]``
    when the trail of the stopped server at ``data_dir`` keeps them all."""
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
    if "Traceback" in log_text or '"traceback"' in log_text:
        problems.append("a traceback in the server log")
    # the records, by device
    chains = _file_device_chains(data_dir)
    file_records = [r for chain in chains for r in _json_lines(chain)]
    problems += _pairing("file", file_records, result)
    db = _db_chains(data_dir)
    db_records = [json.loads(line) for lines in db.values() for line in lines]
    problems += _pairing("db", db_records, result)
    # leaks
    exposed = [("server log", log_text.encode())]
    exposed += [(str(p.name), p.read_bytes()) for chain in chains for p in chain]
    exposed += [
        (p.name, p.read_bytes()) for p in sorted(data_dir.glob("medsecrets.db*")) if p.is_file()
    ]
    for value in sorted(result.planted):
        for form in leak_forms(value):
            for where, text in exposed:
                if form in text:
                    problems.append(f"a planted value ({value[:7]}...) in {where}")
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
        storage = SqliteStorage(data_dir / "medsecrets.db")
        try:
            list(database_records(storage, "db", node, unreadable=unreadable))
        finally:
            storage.close()
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
