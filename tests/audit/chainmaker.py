"""Test helper: audit chains written with ``render_line``, as the broker would.

``ChainMaker`` appends realistic request/response pairs (deterministic for a
seed), signed checkpoints and hand-made records to one chain and keeps the
lines in memory (``lines``) and the exported checkpoints (``exported``)::

    maker = ChainMaker(seed=7, signer=CheckpointSigner.generate())
    maker.add_traffic(999)
    maker.checkpoint()
    verify(maker.lines, start=ChainHead(), checkpoints=maker.exported)

``make_log`` builds such a chain in one call; ``write_log`` writes lines to
a file.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from medsecrets.audit.checkpoint import CheckpointSigner
from medsecrets.audit.device import ChainHead
from medsecrets.audit.record import AuditEvent, Salter, render_line, split_path

__all__ = [
    "BASE_TIME",
    "CANARY",
    "PREFIX",
    "SALT_KEY",
    "ChainMaker",
    "make_log",
    "parse",
    "write_log",
]

BASE_TIME = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
PREFIX = "medessence"
SALT_KEY = b"chainmaker-test-hmac-key-32-bytes!!"
PRINCIPALS = ("alice", "bob", "ci-deployer", "svc-inference", "carol")
REMOTES = ("10.0.0.5", "10.0.0.6", "192.168.1.20", "127.0.0.1")
ENVIRONMENTS = ("production", "staging", "development")
CATEGORIES = ("database", "api-keys", "model-registry", "smtp")
OPERATIONS = (
    ("secrets.read", 6),
    ("metadata.read", 2),
    ("secrets.write", 1),
    ("metadata.list", 1),
    ("sys.health", 1),
)
STATUSES = ((200, 20), (403, 1), (404, 1), (500, 1))
CANARY = "canary-value-never-in-a-record"


class ChainMaker:
    """One chain (one node, one device) grown in memory."""

    def __init__(
        self,
        *,
        seed: int = 0,
        signer: CheckpointSigner | None = None,
        node: str = "node-1",
        device: str = "file",
        start: ChainHead | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.signer = signer
        self.node = node
        self.device = device
        self.salter = Salter(SALT_KEY)
        head = start if start is not None else ChainHead()
        self.seq = head.seq
        self.hash = head.hash
        self.lines: list[bytes] = []
        self.exported: list[dict[str, object]] = []
        self.clock = BASE_TIME

    @property
    def head(self) -> ChainHead:
        """The chain head after the last appended record."""
        return ChainHead(self.seq, self.hash)

    def append(self, event: AuditEvent) -> bytes:
        """Render ``event`` as the next record and keep its line."""
        line, digest = render_line(
            event,
            seq=self.seq + 1,
            prev=self.hash,
            node=self.node,
            device=self.device,
            salter=self.salter,
        )
        self.seq += 1
        self.hash = digest
        self.lines.append(line)
        return line

    def tick(self) -> dt.datetime:
        """Advance the fake clock by 0.5 to 30 seconds; the new time."""
        self.clock += dt.timedelta(seconds=self.rng.uniform(0.5, 30.0))
        return self.clock

    def request_pair(
        self,
        *,
        time: dt.datetime | None = None,
        principal: str | None = None,
        remote: str | None = None,
        user_agent: str = "medsecrets-sdk/0.1",
        operation: str | None = None,
        path: str | None = None,
        version: int | None = None,
        status: int | None = None,
    ) -> tuple[bytes, bytes]:
        """A request record and its response; random fields unless given."""
        rng = self.rng
        if path is None:
            path = "/".join(
                (
                    PREFIX,
                    rng.choice(ENVIRONMENTS),
                    rng.choice(CATEGORIES),
                    rng.choice(("main", "replica")),
                )
            )
        if operation is None:
            operation = rng.choices(*zip(*OPERATIONS, strict=True))[0]
        if status is None:
            status = rng.choices(*zip(*STATUSES, strict=True))[0]
        environment, category = split_path(path, PREFIX)
        event = AuditEvent(
            kind="request",
            time=time or self.tick(),
            request_id=f"req-{self.seq + 1:08d}",
            principal=principal or rng.choice(PRINCIPALS),
            token=f"tok-{rng.getrandbits(64):016x}",
            auth="token",
            remote=remote or rng.choice(REMOTES),
            user_agent=user_agent,
            operation=operation,
            path=path,
            environment=environment,
            category=category,
            version=version if version is not None else rng.randint(1, 4),
            data={"value": {"password": CANARY}} if operation == "secrets.write" else None,
        )
        request = self.append(event)
        response = self.append(
            replace(
                event,
                kind="response",
                status=status,
                error=None if status < 400 else "permission_denied",
                data=None,
            )
        )
        return request, response

    def add_traffic(self, count: int) -> None:
        """Append ``count`` records of random traffic (request/response pairs)."""
        while count >= 2:
            self.request_pair()
            count -= 2
        if count:
            self.append(AuditEvent(kind="request", time=self.tick(), operation="sys.health"))

    def checkpoint(self, *, export: bool = True) -> bytes:
        """Append a checkpoint signed by ``signer`` (exported unless told otherwise)."""
        if self.signer is None:
            raise ValueError("a ChainMaker without a signer makes no checkpoints")
        extra = self.signer.extra(
            node=self.node, device=self.device, covers=self.seq, covers_hash=self.hash
        )
        line = self.append(AuditEvent(kind="checkpoint", time=self.tick(), extra=extra))
        if export:
            self.exported.append(parse(line))
        return line


def make_log(
    count: int,
    *,
    seed: int = 0,
    signer: CheckpointSigner | None = None,
    checkpoint_every: int = 0,
    start: ChainHead | None = None,
) -> ChainMaker:
    """A chain of ``count`` records; every ``checkpoint_every``-th record is a checkpoint."""
    maker = ChainMaker(seed=seed, signer=signer, start=start)
    while len(maker.lines) < count:
        position = len(maker.lines) + 1
        if checkpoint_every and position % checkpoint_every == 0:
            maker.checkpoint()
        elif position == count or (checkpoint_every and (position + 1) % checkpoint_every == 0):
            maker.add_traffic(1)
        else:
            maker.request_pair()
    return maker


def parse(line: bytes) -> dict[str, object]:
    """The JSON object of one record line."""
    record = json.loads(line)
    assert isinstance(record, dict)
    return record


def write_log(path: Path, lines: Iterable[bytes]) -> Path:
    """Write ``lines`` to ``path`` (as a file device would) and return it."""
    with path.open("wb") as handle:
        handle.writelines(lines)
    path.chmod(0o600)
    return path
