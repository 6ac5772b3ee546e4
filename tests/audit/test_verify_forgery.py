"""Forgeries by someone who can rewrite the log but holds neither key.

Each recomputes every hash it touches, so the chain itself is consistent:
- a record replaced by a "sealed" line no key could open (in a plain log), or a
  plaintext line among sealed ones holding HMACs: ``mixed encryption``;
- a record rewritten and every later checkpoint dropped (the forger cannot sign
  new ones): with the public key, the unsigned tail gives it away;
- checkpoints turned into "sealed" lines to hide them from the signature check.

Every case is also verified with worker processes over tiny blocks: same report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from medsecrets.audit import verify as verify_module
from medsecrets.audit.checkpoint import CheckpointSigner
from medsecrets.audit.crypt import RecordCipher
from medsecrets.audit.device import ChainHead
from medsecrets.audit.record import GENESIS
from medsecrets.audit.verify import (
    PROBLEM_DOWNGRADE,
    PROBLEM_ENCRYPTED,
    PROBLEM_MIXED,
    UNSIGNED_TAIL,
    VerifyReport,
    _sealed_spell,
    verify,
    verify_files,
)
from tests.audit.chainmaker import ChainMaker, make_log, parse, write_log

SIGNER = CheckpointSigner.from_private_bytes(bytes(range(7, 39)))
EVERY = 50
LOG = make_log(400, seed=31, signer=SIGNER, checkpoint_every=EVERY)
TAIL = EVERY + 1
_SEQ = re.compile(rb'^(\{"prev":")[0-9a-f]{64}(","seq":)\d+,')


def rechain(lines: Sequence[bytes], start: int) -> list[bytes]:
    """``lines`` with ``prev``, ``seq`` and ``hash`` recomputed from index ``start`` on."""
    out = list(lines[:start])
    for line in lines[start:]:
        before = parse(out[-1]) if out else {"hash": GENESIS, "seq": 0}
        seq = int(before["seq"]) + 1  # type: ignore[call-overload]
        prev = str(before["hash"]).encode()
        found = _SEQ.match(line)
        assert found is not None
        body = found.group(1) + prev + found.group(2) + b"%d," % seq + line[found.end() :]
        text = body[: -len(b',"hash":"') - 64 - 3]
        digest = hashlib.sha256(text + b"}").hexdigest().encode()
        out.append(text + b',"hash":"' + digest + b'"}\n')
    return out


def fake_sealed(line: bytes) -> bytes:
    """A sealed-looking line in ``line``'s place in the chain (no key made it)."""
    record = parse(line)
    return b'{"prev":"%s","seq":%d,"kind":"sealed","enc":"AAAA","hash":"%s"}\n' % (
        str(record["prev"]).encode(),
        int(record["seq"]),  # type: ignore[call-overload]
        str(record["hash"]).encode(),
    )


def is_checkpoint(line: bytes) -> bool:
    return parse(line)["kind"] == "checkpoint"


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_module, "_CHUNK", 4096)


def both(tmp_path: Path, lines: Sequence[bytes], **options: object) -> VerifyReport:
    """The report of ``lines`` as a file, sequentially and with two workers (asserted equal)."""
    path = write_log(tmp_path / "audit.log", lines)
    options.setdefault("start", ChainHead())
    sequential = verify_files([path], workers=0, **options)  # type: ignore[arg-type]
    parallel = verify_files([path], workers=2, **options)  # type: ignore[arg-type]
    assert parallel == sequential
    assert verify(lines, **options) == dataclasses.replace(sequential, file=None)  # type: ignore[arg-type]
    return sequential


def test_the_untouched_log_verifies_with_and_without_the_key(tmp_path: Path) -> None:
    keyed = both(tmp_path, LOG.lines, public_key=SIGNER.public_key, unsigned_tail=TAIL)
    assert (keyed.ok, keyed.checkpoints_verified) == (True, 400 // EVERY)
    assert both(tmp_path, LOG.lines).ok


@pytest.mark.parametrize("index", [0, 1, 137, 249, 399])
@pytest.mark.parametrize("keyed", [False, True])
def test_a_fake_sealed_line_in_a_plain_log(tmp_path: Path, index: int, keyed: bool) -> None:
    lines = list(LOG.lines)
    lines[index] = fake_sealed(lines[index])
    options = {"public_key": SIGNER.public_key} if keyed else {}
    report = both(tmp_path, lines, **options)
    may_unseal = index == 0 or _sealed_spell(lines[index - 1])
    if keyed:
        expected = (index, PROBLEM_ENCRYPTED if may_unseal else PROBLEM_MIXED)
    elif index == len(lines) - 1 and may_unseal:
        # Without the key, an unseal that wrote one encrypted record just before the log
        # was copied looks the same: counted as encrypted, content unchecked.
        assert (report.ok, report.sealed) == (True, 1)
        return
    elif may_unseal:
        # An encrypted line after a record a sealed store writes (or first) may be an
        # unseal: the plain record after it, which only an unsealed store writes, is named.
        expected = (index + 1, PROBLEM_DOWNGRADE)
    else:
        expected = (index, PROBLEM_MIXED)
    assert (report.ok, report.first_bad_index, report.problem) == (False, *expected)


def test_a_plain_line_in_a_sealed_log(tmp_path: Path) -> None:
    cipher = RecordCipher(b"\x07" * 32)
    sealed = [cipher.seal(line) for line in LOG.lines]
    assert both(tmp_path, sealed).ok
    forged = list(sealed)
    forged[222] = LOG.lines[222]
    report = both(tmp_path, forged)
    assert (report.ok, report.first_bad_index, report.problem) == (False, 222, PROBLEM_DOWNGRADE)
    # with the key every line must open
    report = verify(forged, decode=cipher.open, start=ChainHead())
    assert (report.ok, report.first_bad_index, report.problem) == (False, 222, "malformed line")


def test_checkpoints_hidden_as_sealed_lines_after_a_rewrite(tmp_path: Path) -> None:
    lines = list(LOG.lines)
    lines[120] = lines[120].replace(b'"node":"node-1"', b'"node":"node-9"')
    lines = rechain(lines, 120)
    report = both(tmp_path, lines, public_key=SIGNER.public_key)
    assert (report.ok, report.problem) == (False, "checkpoint does not cover the record before it")
    hidden = [fake_sealed(line) if is_checkpoint(line) else line for line in lines]
    report = both(tmp_path, hidden, public_key=SIGNER.public_key, unsigned_tail=TAIL)
    first = next(i for i, line in enumerate(LOG.lines) if is_checkpoint(line))
    # After a record a sealed store writes, an encrypted line may be an unseal: then it is
    # refused as encrypted (its signature needs the key), else as mixed encryption.
    problem = PROBLEM_ENCRYPTED if _sealed_spell(lines[first - 1]) else PROBLEM_MIXED
    assert (report.ok, report.first_bad_index, report.problem) == (False, first, problem)


def test_a_rewrite_that_drops_the_later_checkpoints_leaves_an_unsigned_tail(
    tmp_path: Path,
) -> None:
    lines = list(LOG.lines)
    lines[120] = lines[120].replace(b'"node":"node-1"', b'"node":"node-9"')
    kept = lines[:120] + [line for line in lines[120:] if not is_checkpoint(line)]
    forged = rechain(kept, 120)
    last_signed = max(int(parse(line)["seq"]) for line in forged if is_checkpoint(line))  # type: ignore[call-overload]
    assert last_signed == 100
    report = both(tmp_path, forged, public_key=SIGNER.public_key, unsigned_tail=TAIL)
    assert (report.ok, report.first_bad_seq) == (False, last_signed + TAIL + 1)
    assert report.first_bad_index == last_signed + TAIL  # seq n is line n - 1
    assert report.problem is not None and report.problem.startswith(
        "unsigned tail: no signed checkpoint after seq 100 (more than 51 records"
    )
    assert report.records == report.first_bad_index
    # without the public key nothing tells the forgery apart; the rule can be turned off
    assert both(tmp_path, forged).ok
    assert both(tmp_path, forged, public_key=SIGNER.public_key, unsigned_tail=0).ok
    # the default allows the server's default period: this short log passes it
    assert UNSIGNED_TAIL == 1001
    assert both(tmp_path, forged, public_key=SIGNER.public_key).ok


def test_a_gap_between_checkpoints_is_covered_by_the_next_one(tmp_path: Path) -> None:
    """A server sealed for a while signs nothing; the next checkpoint vouches for the gap."""
    maker = ChainMaker(seed=32, signer=SIGNER)
    for _ in range(3):
        maker.add_traffic(EVERY - 1)
        maker.checkpoint()
    maker.add_traffic(5 * EVERY)  # sealed: no checkpoint for five periods
    maker.checkpoint()
    maker.add_traffic(EVERY)
    report = both(tmp_path, maker.lines, public_key=SIGNER.public_key, unsigned_tail=TAIL)
    assert (report.ok, report.checkpoints_verified) == (True, 4), report.problem
    maker.add_traffic(2)  # now the tail is one record over
    report = both(tmp_path, maker.lines, public_key=SIGNER.public_key, unsigned_tail=TAIL)
    assert (report.ok, report.first_bad_index) == (False, len(maker.lines) - 1)
