"""Offline ``audit verify`` of an encrypted file device over a Shamir-sealed store.

The device's key is a secret read after the unseal, so each start writes its sealed
spell plain (no HMAC, no value) and every record from the unseal on encrypted. The file
is written by a real server (one init run, then three starts with ``encrypt``). Without
the key it verifies as far as it can: each encrypted line's place in the chain, and the
plain stretches after encrypted lines only as records a sealed store writes. A record
decrypted, forged or inserted in clear among encrypted ones is named. What only the key
shows (a stretch like a sealed spell's, spliced in) is shown with it.

Every file case is also verified with worker processes over tiny blocks: same report.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from medsecrets.audit import verify as verify_module
from medsecrets.audit.checkpoint import CheckpointSigner
from medsecrets.audit.crypt import RecordCipher, is_sealed
from medsecrets.audit.device import ChainHead
from medsecrets.audit.readback import line_decoder
from medsecrets.audit.verify import (
    PROBLEM_DOWNGRADE,
    PROBLEM_DUPLICATE,
    PROBLEM_ENCRYPTED,
    PROBLEM_GAP,
    PROBLEM_MALFORMED,
    PROBLEM_MIXED,
    verify,
)
from tests.audit.chainmaker import ChainMaker, parse
from tests.audit.test_verify_forgery import both, rechain
from tests.server.test_shamir_encrypted_audit import KEY, SECRET, _config, _h, _initialised

STARTS = 3
READS = 3
_CLEAR = re.compile(rb'^\{"prev":"[0-9a-f]{64}","seq":\d+,')


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_module, "_CHUNK", 4096)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[bytes], RecordCipher]:
    """The lines of a real server's audit file (init, then STARTS starts with ``encrypt``,
    each unsealed with its share and reading a secret READS times) and its at-rest key."""
    tmp_path = tmp_path_factory.mktemp("shamir")
    server, share, root = _initialised(tmp_path, False)
    _config(tmp_path, process=False, encrypt=KEY)
    key = ""
    for _ in range(STARTS):
        server.start()
        try:
            assert httpx.post(f"{server.addr}/v1/sys/unseal", json={"share": share}).is_success
            for _ in range(READS):
                read = httpx.get(f"{server.addr}/v1/secrets/{SECRET}", headers=_h(root))
                assert read.status_code == 200, read.text
            path, field = KEY.split("#")
            found = httpx.get(f"{server.addr}/v1/secrets/{path}", headers=_h(root))
            key = found.json()["fields"][field]
        finally:
            server.stop()
    lines = (tmp_path / "audit" / "audit.jsonl").read_bytes().splitlines(keepends=True)
    shutil.rmtree(tmp_path / "data")
    return lines, RecordCipher.from_hex(key)


def _runs(lines: Sequence[bytes]) -> list[tuple[bool, int, int]]:
    """``(sealed, first index, end index)`` of each run of sealed or plain lines."""
    runs: list[tuple[bool, int, int]] = []
    for index, line in enumerate(lines):
        if runs and runs[-1][0] == is_sealed(line):
            runs[-1] = (runs[-1][0], runs[-1][1], index + 1)
        else:
            runs.append((is_sealed(line), index, index + 1))
    return runs


def _sealed_runs(lines: Sequence[bytes]) -> list[range]:
    return [range(first, end) for sealed, first, end in _runs(lines) if sealed]


def forge_chain(lines: Sequence[bytes], start: int) -> list[bytes]:
    """``lines`` made to chain again from index ``start`` by a forger without the key: a
    plain line is rehashed, a sealed one gets ``prev``/``seq`` edited in clear."""
    out = list(lines[:start])
    for line in lines[start:]:
        if not is_sealed(line):
            out = rechain([*out, line], len(out))
            continue
        before = parse(out[-1])
        seq = int(before["seq"]) + 1  # type: ignore[call-overload]
        found = _CLEAR.match(line)
        assert found is not None
        clear = b'{"prev":"%s","seq":%d,' % (str(before["hash"]).encode(), seq)
        out.append(clear + line[found.end() :])
    return out


def _with_key(lines: Sequence[bytes], cipher: RecordCipher) -> tuple[bool, int | None, str | None]:
    report = verify(lines, decode=line_decoder(cipher), start=ChainHead())
    return report.ok, report.first_bad_index, report.problem


def test_the_file_holds_plain_stretches_between_encrypted_runs(
    written: tuple[list[bytes], RecordCipher],
) -> None:
    lines, _ = written
    runs = _runs(lines)
    assert [sealed for sealed, *_ in runs] == [False, True] * STARTS
    assert all(json.loads(line)["accessor"] is None for line in lines[runs[2][1] : runs[2][2]])


def test_an_untouched_file_verifies_without_the_key_as_far_as_it_can(
    tmp_path: Path, written: tuple[list[bytes], RecordCipher]
) -> None:
    lines, cipher = written
    report = both(tmp_path, lines)
    sealed = sum(map(is_sealed, lines))
    first_sealed = next(i for i, line in enumerate(lines) if is_sealed(line))
    after = sum(not is_sealed(line) for line in lines[first_sealed:])
    assert (report.ok, report.records, report.sealed) == (True, len(lines), sealed)
    assert (report.plain_stretches, report.plain_stretch_records) == (STARTS - 1, after)
    assert _with_key(lines, cipher) == (True, None, None)


def test_the_cli_says_what_it_checked_and_what_needs_the_key(
    tmp_path: Path, written: tuple[list[bytes], RecordCipher]
) -> None:
    lines, cipher = written
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(lines))
    command = [sys.executable, "-m", "medsecrets", "audit", "verify", str(path)]
    text = subprocess.run(command, capture_output=True, text=True, check=False)
    assert text.returncode == 0, text.stdout + text.stderr
    sealed = sum(map(is_sealed, lines))
    assert f"Encrypted records: {sealed} checked for their place in the chain only" in text.stdout
    assert f"Plain stretches: {STARTS - 1} after encrypted records" in text.stdout
    assert "--key-file" in text.stdout
    found = subprocess.run([*command, "-o", "json"], capture_output=True, text=True, check=False)
    assert found.returncode == 0, found.stderr
    data = json.loads(found.stdout)
    assert (data["ok"], data["sealed_unchecked"], data["plain_stretches"]) == (
        True,
        sealed,
        STARTS - 1,
    )
    assert data["plain_stretch_records"] > 0

    downgraded = list(lines)
    index = _sealed_runs(lines)[1][2]
    downgraded[index] = cipher.open(downgraded[index])
    path.write_bytes(b"".join(downgraded))
    failed = subprocess.run([*command, "-o", "json"], capture_output=True, text=True, check=False)
    assert failed.returncode == 7
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
    assert f"line index {index} " in failed.stderr and "mixed encryption" in failed.stderr
    data = json.loads(failed.stdout)
    assert (data["ok"], data["first_bad_index"], data["problem"]) == (
        False,
        index,
        PROBLEM_DOWNGRADE,
    )


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_record_decrypted_in_place_is_named(
    tmp_path: Path, written: tuple[list[bytes], RecordCipher], where: str
) -> None:
    """A sealed line replaced by its own plaintext (with HMACs): the chain itself is
    intact. (One without HMACs, such as the unseal's response, would be accepted: it is
    the genuine record, and one a sealed store could have written.)"""
    lines, cipher = written
    run = [i for i in _sealed_runs(lines)[1] if parse(cipher.open(lines[i]))["accessor"]]
    index = {"first": run[0], "middle": run[len(run) // 2], "last": len(lines) - 1}[where]
    downgraded = list(lines)
    downgraded[index] = cipher.open(lines[index])
    report = both(tmp_path, downgraded)
    assert (report.ok, report.first_bad_index, report.problem) == (False, index, PROBLEM_DOWNGRADE)


def test_a_forged_plain_record_among_encrypted_ones_is_named(
    tmp_path: Path, written: tuple[list[bytes], RecordCipher]
) -> None:
    """The forger writes a record in clear (with HMACs, as an unsealed store renders) in
    a sealed line's place and edits the next sealed line's ``prev`` to follow it."""
    lines, cipher = written
    index = _sealed_runs(lines)[1][2]
    plain = cipher.open(lines[index]).replace(b'"status":200', b'"status":404')
    forged = forge_chain([*lines[:index], plain, *lines[index + 1 :]], index)
    report = both(tmp_path, forged)
    assert (report.ok, report.first_bad_index, report.problem) == (False, index, PROBLEM_DOWNGRADE)
    assert _with_key(forged, cipher) == (False, index + 1, PROBLEM_MALFORMED)


def test_a_stretch_with_hmacs_spliced_in_among_encrypted_ones_is_named(
    tmp_path: Path, written: tuple[list[bytes], RecordCipher]
) -> None:
    """Records of the init run (with accessors) copied in among encrypted ones."""
    lines, cipher = written
    at = _sealed_runs(lines)[1][2]
    spliced = forge_chain([*lines[:at], *lines[6:10], *lines[at:]], at)
    report = both(tmp_path, spliced)
    assert (report.ok, report.first_bad_index, report.problem) == (False, at, PROBLEM_DOWNGRADE)
    assert _with_key(spliced, cipher) == (False, at + 4, PROBLEM_MALFORMED)


def test_a_plain_record_naming_a_principal_among_encrypted_ones_is_named(
    tmp_path: Path, written: tuple[list[bytes], RecordCipher]
) -> None:
    """A sealed store cannot authenticate, so none of its records names a principal: a
    record in clear with ``accessor`` null that does (a read "by root" made up by a forger
    who left out the HMACs) is no sealed spell's record, and is not accepted as one."""
    lines, _ = written
    spell = lines[_runs(lines)[2][1]]
    record = json.loads(spell)
    assert record["principal"] is None
    made_up = spell.replace(b'"principal":null', b'"principal":"root"')
    at = _sealed_runs(lines)[1][2]
    forged = forge_chain([*lines[:at], made_up, *lines[at:]], at)
    report = both(tmp_path, forged)
    assert (report.ok, report.first_bad_index, report.problem) == (False, at, PROBLEM_DOWNGRADE)


def test_a_stretch_like_a_sealed_spell_spliced_in_is_counted_and_named_with_the_key(
    tmp_path: Path, written: tuple[list[bytes], RecordCipher]
) -> None:
    """The limit without the key: records like a sealed spell's, spliced in with the
    sealed lines after them edited in clear, look like one more start (and are counted
    as one); the key names the encrypted line after them."""
    lines, cipher = written
    runs = _runs(lines)
    spell = lines[runs[2][1] : runs[2][2]]
    at = _sealed_runs(lines)[1][2]
    spliced = forge_chain([*lines[:at], *spell, *lines[at:]], at)
    report = both(tmp_path, spliced)
    assert (report.ok, report.plain_stretches) == (True, STARTS)
    assert _with_key(spliced, cipher) == (False, at + len(spell), PROBLEM_MALFORMED)


def test_an_encrypted_line_after_a_record_with_hmacs_is_mixed(
    tmp_path: Path, written: tuple[list[bytes], RecordCipher]
) -> None:
    """A record of the init run replaced by a "sealed" line no key opens."""
    lines, _ = written
    record = parse(lines[8])
    assert record["accessor"] is not None and parse(lines[7])["accessor"] is not None
    faked = list(lines)
    faked[8] = b'{"prev":"%s","seq":%d,"kind":"sealed","enc":"AAAA","hash":"%s"}\n' % (
        str(record["prev"]).encode(),
        int(record["seq"]),  # type: ignore[call-overload]
        str(record["hash"]).encode(),
    )
    report = both(tmp_path, faked)
    assert (report.ok, report.first_bad_index, report.problem) == (False, 8, PROBLEM_MIXED)


@pytest.mark.parametrize("mutation", ["delete", "duplicate", "swap"])
def test_encrypted_and_plain_lines_are_checked_for_their_place(
    tmp_path: Path, written: tuple[list[bytes], RecordCipher], mutation: str
) -> None:
    lines, _ = written
    run = _sealed_runs(lines)[1]
    index = run[1]
    changed = list(lines)
    if mutation == "delete":
        del changed[index]
        expected = (index, PROBLEM_GAP)
    elif mutation == "duplicate":
        changed.insert(index, lines[index])
        expected = (index + 1, PROBLEM_DUPLICATE)
    else:
        changed[index], changed[index + 1] = changed[index + 1], changed[index]
        expected = (index, PROBLEM_GAP)
    report = both(tmp_path, changed)
    assert (report.ok, report.first_bad_index, report.problem) == (False, *expected)


def test_a_plain_checkpoint_after_encrypted_lines_is_named(tmp_path: Path) -> None:
    """A sealed store signs nothing: a checkpoint in clear after encrypted lines is not
    one of its records (here with a valid signature, copied from the chain before)."""
    signer = CheckpointSigner.from_private_bytes(bytes(range(3, 35)))
    cipher = RecordCipher(b"\x05" * 32)
    maker = ChainMaker(seed=5, signer=signer)
    maker.add_traffic(4)
    salter, maker.salter = maker.salter, None  # type: ignore[assignment]
    maker.add_traffic(3)  # a sealed spell: no HMAC
    maker.salter = salter
    maker.add_traffic(4)
    maker.checkpoint()
    stored = [*maker.lines[:7], *(cipher.seal(line) for line in maker.lines[7:-1])]
    assert both(tmp_path, [*stored, cipher.seal(maker.lines[-1])]).ok
    report = both(tmp_path, [*stored, maker.lines[-1]])
    last = len(maker.lines) - 1
    assert (report.ok, report.first_bad_index, report.problem) == (False, last, PROBLEM_DOWNGRADE)
    keyed = both(tmp_path, stored, public_key=signer.public_key)
    assert (keyed.ok, keyed.first_bad_index, keyed.problem) == (False, 7, PROBLEM_ENCRYPTED)
