"""The issue's must-show: tampering with an audit log is detected, at the right line.

One 10,000-record chain (request/response traffic with a signed checkpoint as
every 1,000th record, the last one exported) is built once. Each of at least
1,000 random mutations is applied alone to a fresh copy of its lines and the
whole copy is verified from its first line against the last exported
checkpoint: every one must fail, and at the index of the first tampered line.
Then 100 untouched logs must verify clean, signatures included.

The mutation loop leaves signature checks out (about 2 ms per log, 11
checkpoints, and none of these mutations touches a signature); forged
signatures have their own tests in ``test_verify.py``.

What cannot be detected, by design, is not generated: a forged record with a
valid hash appended *after* the last record is a legitimate-looking
extension of the chain (the next checkpoint would expose it to a signature
check only if it were signed).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest

from medsecrets.audit.checkpoint import CheckpointSigner
from medsecrets.audit.device import ChainHead
from medsecrets.audit.record import GENESIS, AuditEvent, Salter, render_line
from medsecrets.audit.verify import verify
from tests.audit.chainmaker import BASE_TIME, SALT_KEY, ChainMaker, make_log, parse

SIZE = 10_000
SEED = 20_261_128
MUTATIONS_PER_KIND = 112  # x 9 kinds = 1,008 mutations

SIGNER = CheckpointSigner.from_private_bytes(bytes(range(32)))
BASE = make_log(SIZE, seed=SEED, signer=SIGNER, checkpoint_every=1000)
LINES: tuple[bytes, ...] = tuple(BASE.lines)
HASHES: tuple[str, ...] = tuple(str(parse(line)["hash"]) for line in LINES)
LAST_EXPORTED = BASE.exported[-1:]
# Realistic foreign records (another chain) to insert.
FOREIGN: tuple[bytes, ...] = tuple(make_log(200, seed=SEED + 1).lines)
_SALTER = Salter(SALT_KEY)

Mutation = tuple[list[bytes], int]
"""The mutated lines and the index of the first tampered line."""


def _forged(seq: int, prev: str) -> bytes:
    event = AuditEvent(
        kind="response",
        time=BASE_TIME,
        principal="mallory",
        operation="secrets.read",
        path="medessence/production/database/main",
        status=200,
    )
    line, _ = render_line(event, seq=seq, prev=prev, node="node-1", device="file", salter=_SALTER)
    return line


def flip(rng: random.Random) -> Mutation:
    """Change one byte (anywhere, the newline included) of one line."""
    lines = list(LINES)
    i = rng.randrange(SIZE)
    line = bytearray(lines[i])
    position = rng.randrange(len(line))
    line[position] ^= rng.randrange(1, 256)
    lines[i] = bytes(line)
    return lines, i


def delete(rng: random.Random) -> Mutation:
    """Remove one line (the last one: a truncation the checkpoint exposes)."""
    lines = list(LINES)
    i = rng.randrange(SIZE)
    del lines[i]
    return lines, i


def reorder(rng: random.Random) -> Mutation:
    """Swap two lines (adjacent ones half of the time)."""
    lines = list(LINES)
    i = rng.randrange(SIZE - 1)
    j = i + 1 if rng.random() < 0.5 else rng.randrange(i + 1, SIZE)
    lines[i], lines[j] = lines[j], lines[i]
    return lines, i


def duplicate(rng: random.Random) -> Mutation:
    """Insert a copy of one line anywhere (right after itself a third of the time)."""
    lines = list(LINES)
    j = rng.randrange(SIZE)
    p = j + 1 if rng.random() < 0.33 else rng.randrange(SIZE + 1)
    lines.insert(p, LINES[j])
    return lines, j + 1 if p in (j, j + 1) else p


def insert_foreign(rng: random.Random) -> Mutation:
    """Insert a valid record of another chain."""
    lines = list(LINES)
    p = rng.randrange(SIZE + 1)
    lines.insert(p, rng.choice(FOREIGN))
    return lines, p


def insert_bad_hash(rng: random.Random) -> Mutation:
    """Insert a record that fits the chain but whose hash was not recomputed."""
    lines = list(LINES)
    p = rng.randrange(SIZE + 1)
    line = _forged(p + 1, HASHES[p - 1] if p else GENESIS)
    lines.insert(p, line[:-67] + f"{rng.getrandbits(256):064x}".encode() + b'"}\n')
    return lines, p


def insert_wrong_prev(rng: random.Random) -> Mutation:
    """Insert a record with a recomputed, valid hash, the right seq and a wrong prev."""
    lines = list(LINES)
    p = rng.randrange(SIZE + 1)
    lines.insert(p, _forged(p + 1, f"{rng.getrandbits(256):064x}"))
    return lines, p


def insert_chained(rng: random.Random) -> Mutation:
    """Insert a record with a valid hash, prev and seq: its successor no longer fits."""
    lines = list(LINES)
    p = rng.randrange(SIZE)
    lines.insert(p, _forged(p + 1, HASHES[p - 1] if p else GENESIS))
    return lines, p


def truncate(rng: random.Random) -> Mutation:
    """Cut the tail: whole lines, or in the middle of a line (a torn write)."""
    keep = rng.randrange(SIZE)
    lines = list(LINES[:keep])
    if rng.random() < 0.3:
        torn = LINES[keep]
        lines.append(torn[: rng.randrange(1, len(torn))])
    return lines, keep


KINDS: tuple[Callable[[random.Random], Mutation], ...] = (
    flip,
    delete,
    reorder,
    duplicate,
    insert_foreign,
    insert_bad_hash,
    insert_wrong_prev,
    insert_chained,
    truncate,
)


def test_the_base_log_verifies() -> None:
    report = verify(
        LINES, public_key=SIGNER.public_key, checkpoints=BASE.exported, start=ChainHead()
    )
    assert report.ok, report
    assert report.records == SIZE
    assert report.checkpoints_verified == SIZE // 1000
    assert report.head == ChainHead(SIZE, HASHES[-1])


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_every_mutation_is_detected_at_its_first_bad_line(
    kind: Callable[[random.Random], Mutation],
) -> None:
    rng = random.Random(f"{SEED}-{kind.__name__}")
    missed: list[tuple[int, int | None, str | None]] = []
    problems: Counter[str] = Counter()
    for _ in range(MUTATIONS_PER_KIND):
        lines, expected = kind(rng)
        report = verify(lines, checkpoints=LAST_EXPORTED, start=ChainHead())
        if report.ok or report.first_bad_index != expected:
            missed.append((expected, report.first_bad_index, report.problem))
        else:
            problems[str(report.problem).split(":")[0]] += 1
    assert not missed, f"{len(missed)}/{MUTATIONS_PER_KIND} missed, e.g. {missed[:5]}"
    assert sum(problems.values()) == MUTATIONS_PER_KIND


def test_there_are_at_least_1000_mutations() -> None:
    assert len(KINDS) * MUTATIONS_PER_KIND >= 1000


def test_no_false_positives_on_100_untouched_logs() -> None:
    for seed in range(100):
        maker = ChainMaker(seed=seed, signer=SIGNER, node=f"node-{seed % 3}")
        for _ in range(4):
            maker.add_traffic(49)
            maker.checkpoint()
        report = verify(
            maker.lines,
            public_key=SIGNER.public_key,
            checkpoints=maker.exported,
            start=ChainHead(),
        )
        assert report.ok, (seed, report)
        assert report.records == 200
        assert report.checkpoints_verified == 4
