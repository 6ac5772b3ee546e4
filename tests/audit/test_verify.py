"""``verify`` and ``verify_files``: what each problem looks like, files, rotation, seams."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from medsecrets.audit.checkpoint import CheckpointSigner
from medsecrets.audit.crypt import RecordCipher
from medsecrets.audit.device import ChainHead
from medsecrets.audit.record import GENESIS, AuditEvent, LineError, render_line
from medsecrets.audit.verify import VerifyReport, verify, verify_files
from tests.audit.chainmaker import BASE_TIME, ChainMaker, make_log, parse, write_log

SIGNER = CheckpointSigner.from_private_bytes(b"\x07" * 32)


@pytest.fixture(scope="module")
def log() -> ChainMaker:
    """120 records, a checkpoint every 20th (seq 20, 40, ... 120), all exported."""
    return make_log(120, seed=11, signer=SIGNER, checkpoint_every=20)


def check(lines: list[bytes], log: ChainMaker, **options: object) -> VerifyReport:
    options.setdefault("public_key", SIGNER.public_key)
    options.setdefault("checkpoints", log.exported)
    options.setdefault("start", ChainHead())
    return verify(lines, **options)  # type: ignore[arg-type]


def edit(line: bytes) -> bytes:
    """``line`` with its node changed (its hash left stale)."""
    assert b'"node":"node-1"' in line
    return line.replace(b'"node":"node-1"', b'"node":"node-2"')


def rehash(line: bytes) -> bytes:
    """``line`` with its hash recomputed (an attacker's edit)."""
    body = line.rstrip(b"\n")[:-75]
    record = parse(line)
    record.pop("hash")
    assert json.loads(body + b"}") == record
    digest = hashlib.sha256(body + b"}").hexdigest()
    return body + b',"hash":"' + digest.encode() + b'"}\n'


def test_an_untouched_log_verifies(log: ChainMaker) -> None:
    report = check(log.lines, log)
    assert report == VerifyReport(
        ok=True,
        records=120,
        checkpoints_verified=6,
        first_bad_index=None,
        first_bad_seq=None,
        problem=None,
        last_seq=120,
        last_hash=str(parse(log.lines[-1])["hash"]),
    )
    assert report.head == log.head


def test_lines_without_newlines_and_mixed_endings_verify(log: ChainMaker) -> None:
    bare = [line.rstrip(b"\n") for line in log.lines]
    assert check(bare, log).ok
    mixed = [line if i % 3 else line.rstrip(b"\n") for i, line in enumerate(log.lines)]
    assert check(mixed, log).ok


def test_an_empty_log_verifies_unless_a_checkpoint_was_exported(log: ChainMaker) -> None:
    assert verify([]).ok
    report = check([], log)
    assert not report.ok
    assert report.problem == "truncated: log ends at seq 0, exported checkpoint covers seq 120"
    assert (report.first_bad_index, report.first_bad_seq) == (0, 1)


@pytest.mark.parametrize(
    ("mutate", "index", "problem"),
    [
        (lambda ls: [*ls[:7], edit(ls[7]), *ls[8:]], 7, "hash mismatch"),
        (lambda ls: ls[:7] + ls[8:], 7, "sequence gap"),
        (lambda ls: [*ls[:7], ls[8], ls[7], *ls[9:]], 7, "sequence gap"),
        (lambda ls: [*ls[:8], ls[7], *ls[8:]], 8, "duplicate record"),
        (lambda ls: [*ls[:30], ls[7], *ls[30:]], 30, "sequence goes backwards"),
        (lambda ls: [*ls[:7], b"garbage\n", *ls[7:]], 7, "malformed line"),
        (lambda ls: [*ls[:7], b"\n", *ls[7:]], 7, "malformed line"),
        (lambda ls: [*ls[:7], rehash(edit(ls[7])), *ls[8:]], 8, "chain broken"),
        (lambda ls: ls[:50], 50, "truncated: log ends at seq 50"),
        (lambda ls: ls[:119], 119, "truncated: log ends at seq 119"),
    ],
    ids=[
        "edit",
        "delete",
        "swap",
        "duplicate",
        "replay",
        "garbage",
        "blank",
        "edit-and-rehash",
        "truncate",
        "drop-last-checkpoint",
    ],
)
def test_each_problem_is_named_at_its_line(
    log: ChainMaker, mutate: object, index: int, problem: str
) -> None:
    report = check(mutate(list(log.lines)), log)  # type: ignore[operator]
    assert not report.ok
    assert report.first_bad_index == index
    assert str(report.problem).startswith(problem)
    assert report.records == index
    assert report.last_seq == index


def test_an_inserted_record_that_fits_is_reported_not_its_successor(log: ChainMaker) -> None:
    previous = parse(log.lines[9])
    forged, _ = render_line(
        AuditEvent(kind="response", time=BASE_TIME, principal="mallory", status=200),
        seq=11,
        prev=str(previous["hash"]),
        node="node-1",
        device="file",
        salter=log.salter,
    )
    lines = [*log.lines[:10], forged, *log.lines[10:]]
    report = check(lines, log)
    assert (report.ok, report.first_bad_index, report.problem) == (False, 10, "inserted record")
    assert report.first_bad_seq == 11
    assert report.head == ChainHead(10, str(previous["hash"]))


def test_a_rewritten_chain_fails_on_the_checkpoint_signature(log: ChainMaker) -> None:
    """An attacker who rewrites everything and re-signs with their own key."""
    forger = make_log(120, seed=11, signer=CheckpointSigner.generate(), checkpoint_every=20)
    report = check(forger.lines, log, checkpoints=())
    assert (report.first_bad_index, report.problem) == (19, "bad checkpoint signature")
    assert report.checkpoints_verified == 0
    # Without the public key the rewritten chain is self-consistent ...
    assert check(forger.lines, log, checkpoints=(), public_key=None).ok
    # ... but not the exported checkpoints of the real one.
    report = check(forger.lines, log, public_key=None)
    assert (report.first_bad_index, report.problem) == (19, "log diverges from exported checkpoint")


def test_a_checkpoint_that_does_not_cover_its_predecessor_is_refused(log: ChainMaker) -> None:
    maker = ChainMaker(seed=5, signer=SIGNER)
    maker.add_traffic(6)
    extra = SIGNER.extra(node=maker.node, device=maker.device, covers=5, covers_hash=maker.hash)
    maker.append(AuditEvent(kind="checkpoint", time=BASE_TIME, extra=extra))
    report = verify(maker.lines, start=ChainHead())
    assert (report.first_bad_index, report.problem) == (
        6,
        "checkpoint does not cover the record before it",
    )


def test_a_forged_exported_checkpoint_is_refused(log: ChainMaker) -> None:
    forged = dict(log.exported[-1])
    forged["signature"] = base64.b64encode(b"\1" * 64).decode()
    report = check(log.lines, log, checkpoints=[forged])
    assert not report.ok
    assert report.first_bad_index is None
    assert report.problem == "bad checkpoint signature (exported, seq 120)"
    with pytest.raises(LineError):
        check(log.lines, log, checkpoints=[{"kind": "checkpoint"}])
    with pytest.raises(LineError):
        check(log.lines, log, checkpoints=[parse(log.lines[0])])


def test_start_none_trusts_the_first_line_of_a_rotated_file(log: ChainMaker) -> None:
    tail = log.lines[40:]
    report = check(tail, log, start=None)
    assert report.ok, report
    assert report.records == 80
    assert report.checkpoints_verified == 4
    # Given the previous file's head, the same lines chain on from it ...
    head = ChainHead(40, str(parse(log.lines[39])["hash"]))
    assert check(tail, log, start=head).ok
    # ... and with the genesis head they do not.
    report = check(tail, log)
    assert (report.first_bad_index, report.problem) == (0, "sequence gap")
    # A trusted start still checks seq 1 against GENESIS.
    forged, _ = render_line(
        AuditEvent(kind="request", time=BASE_TIME),
        seq=1,
        prev="1" * 64,
        node="n",
        device="d",
        salter=log.salter,
    )
    report = verify([forged], start=None)
    assert (report.ok, report.problem) == (False, "chain broken (prev does not match)")
    garbage = verify([b"nonsense"], start=None)
    assert (garbage.problem, garbage.first_bad_seq) == ("malformed line", None)


def test_verify_files_checks_rotated_files_as_one_chain(tmp_path: Path, log: ChainMaker) -> None:
    paths = [
        write_log(tmp_path / "audit.log.1", log.lines[:45]),
        write_log(tmp_path / "audit.log.2", log.lines[45:100]),
        write_log(tmp_path / "audit.log", log.lines[100:]),
    ]
    report = verify_files(
        paths, public_key=SIGNER.public_key, checkpoints=log.exported, start=ChainHead()
    )
    assert report.ok, report
    assert (report.records, report.checkpoints_verified, report.head) == (120, 6, log.head)
    # The last file alone, its head rotated away.
    assert verify_files(paths[2:], public_key=SIGNER.public_key).ok
    # A record deleted from the middle file is reported in that file.
    write_log(paths[1], log.lines[45:60] + log.lines[61:100])
    report = verify_files(paths, checkpoints=log.exported, start=ChainHead())
    assert (report.file, report.first_bad_index, report.first_bad_seq) == (paths[1], 15, 61)
    # A file dropped from the set breaks the chain at the next one.
    report = verify_files([paths[0], paths[2]], start=ChainHead())
    assert (report.file, report.first_bad_index, report.problem) == (paths[2], 0, "sequence gap")


def test_verify_files_reports_a_torn_last_line_and_a_truncated_tail(
    tmp_path: Path, log: ChainMaker
) -> None:
    path = write_log(tmp_path / "audit.log", log.lines)
    path.write_bytes(path.read_bytes()[:-10])
    report = verify_files([path], checkpoints=log.exported, start=ChainHead())
    assert (report.first_bad_index, report.problem) == (119, "malformed line")
    write_log(path, log.lines[:101])
    report = verify_files([path], checkpoints=log.exported, start=ChainHead())
    assert (report.file, report.first_bad_index, report.first_bad_seq) == (path, 101, 102)
    assert report.problem == "truncated: log ends at seq 101, exported checkpoint covers seq 120"


def test_verify_files_reads_large_files_across_chunk_boundaries(tmp_path: Path) -> None:
    big = make_log(9000, seed=2)  # about 6 MB: more than one 4 MiB chunk
    path = write_log(tmp_path / "audit.log", big.lines)
    assert path.stat().st_size > 4 << 20
    assert verify_files([path], start=ChainHead()).ok
    lines = list(big.lines)
    del lines[7000]
    write_log(path, lines)
    report = verify_files([path], start=ChainHead())
    assert (report.first_bad_index, report.problem) == (7000, "sequence gap")


def test_decode_maps_stored_lines_before_the_checks(tmp_path: Path, log: ChainMaker) -> None:
    def encode(line: bytes) -> bytes:
        return base64.b64encode(line.rstrip(b"\n")) + b"\n"

    def decode(stored: bytes) -> bytes:
        try:
            return base64.b64decode(stored, validate=True)
        except ValueError:
            raise LineError("cannot decode") from None

    path = write_log(tmp_path / "audit.enc", [encode(line) for line in log.lines])
    assert b'"prev"' not in path.read_bytes()
    options = {"public_key": SIGNER.public_key, "checkpoints": log.exported}
    assert verify_files([path], decode=decode, start=ChainHead(), **options).ok  # type: ignore[arg-type]
    assert verify_files([path], decode=decode, **options).ok  # type: ignore[arg-type]
    stored = [encode(line) for line in log.lines]
    stored[33] = b"!!" + stored[33]
    report = verify(stored, decode=decode, start=ChainHead())
    assert (report.first_bad_index, report.problem) == (33, "malformed line")
    report = verify(stored[:1], decode=decode, start=None)
    assert report.ok


def test_reports_carry_no_record_content(log: ChainMaker) -> None:
    lines = list(log.lines)
    lines[5] = lines[5].replace(b'"node":"node-1"', b'"node":"node-X"')
    report = check(lines, log)
    assert (report.ok, report.problem) == (False, "hash mismatch")
    assert "node-X" not in repr(report)
    assert GENESIS not in str(report.problem)


def test_sealed_records_chain_without_the_key_and_verify_fully_with_it(
    tmp_path: Path, log: ChainMaker
) -> None:
    cipher = RecordCipher(b"\x42" * 32)
    path = write_log(tmp_path / "audit.log", [cipher.seal(line) for line in log.lines])
    options = {"public_key": SIGNER.public_key, "checkpoints": log.exported, "start": ChainHead()}
    blind_options = {"checkpoints": log.exported, "start": ChainHead()}
    blind = verify_files([path], **blind_options)  # type: ignore[arg-type]
    assert (blind.ok, blind.sealed, blind.checkpoints_verified) == (True, 120, 0)
    # Signatures inside sealed lines cannot be checked without the key: not "ok".
    unkeyed = verify_files([path], **options)  # type: ignore[arg-type]
    assert (unkeyed.ok, unkeyed.first_bad_index, unkeyed.problem) == (
        False,
        0,
        "encrypted record: its checkpoint signatures need the key",
    )
    full = verify_files([path], decode=cipher.open, **options)  # type: ignore[arg-type]
    assert (full.ok, full.sealed, full.checkpoints_verified) == (True, 0, 6)
    assert full.head == blind.head == log.head

    sealed = path.read_bytes().splitlines(keepends=True)
    flipped = list(sealed)
    flipped[50] = flipped[50].replace(b'"enc":"', b'"enc":"A', 1)
    report = verify(flipped, decode=cipher.open, **options)  # type: ignore[arg-type]
    assert (report.first_bad_index, report.problem) == (50, "malformed line")
    report = verify(sealed[:30] + sealed[31:], **blind_options)  # type: ignore[arg-type]
    assert (report.first_bad_index, report.problem) == (30, "sequence gap")
    report = verify(sealed[:90], **blind_options)  # type: ignore[arg-type]
    assert (report.first_bad_index, report.problem[:9]) == (90, "truncated")  # type: ignore[index]
