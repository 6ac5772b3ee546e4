"""Signed checkpoints: keys, signatures, the checkpoint record and its export file."""

from __future__ import annotations

import base64
import hashlib
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from medsecrets.audit.checkpoint import (
    CheckpointSigner,
    checkpoint_message,
    export_checkpoint,
    key_id_of,
    load_public_key,
    read_checkpoints,
    verify_checkpoint,
)
from medsecrets.audit.record import CHECKPOINT_FIELDS, LineError
from medsecrets.errors import InvalidRequest
from tests.audit.chainmaker import ChainMaker, parse

RAW = bytes(range(32))


def test_key_id_is_the_sha256_prefix_of_the_raw_public_key() -> None:
    signer = CheckpointSigner.from_private_bytes(RAW)
    raw_public = (
        Ed25519PrivateKey.from_private_bytes(RAW)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    assert signer.key_id == hashlib.sha256(raw_public).hexdigest()[:16]
    assert key_id_of(signer.public_key) == signer.key_id


def test_private_bytes_round_trip_and_generate_makes_distinct_keys() -> None:
    signer = CheckpointSigner.from_private_bytes(RAW)
    assert signer.private_bytes() == RAW
    assert CheckpointSigner.from_private_bytes(signer.private_bytes()).key_id == signer.key_id
    assert CheckpointSigner.generate().key_id != CheckpointSigner.generate().key_id


def test_bad_private_bytes_are_refused_without_echoing_them() -> None:
    with pytest.raises(InvalidRequest) as caught:
        CheckpointSigner.from_private_bytes(b"\x01" * 31)
    assert "\\x01" not in str(caught.value)


def test_repr_masks_the_key_and_pickling_is_refused() -> None:
    signer = CheckpointSigner.from_private_bytes(RAW)
    text = repr(signer)
    assert signer.key_id in text
    assert RAW.hex() not in text
    assert base64.b64encode(RAW).decode() not in text
    with pytest.raises(TypeError):
        pickle.dumps(signer)


def test_extra_signs_the_documented_message() -> None:
    signer = CheckpointSigner.from_private_bytes(RAW)
    extra = signer.extra(node="n1", device="file", covers=41, covers_hash="ab" * 32)
    assert set(extra) == {"covers", "covers_hash", "key_id", "signature"}
    assert set(extra) < set(CHECKPOINT_FIELDS)
    message = b"medsecrets-audit-checkpoint/v1\nn1\nfile\n41\n" + ("ab" * 32).encode()
    assert checkpoint_message(node="n1", device="file", covers=41, covers_hash="ab" * 32) == (
        message
    )
    signature = base64.b64decode(str(extra["signature"]))
    signer.public_key.verify(signature, message)  # raises if not


def test_a_rendered_checkpoint_record_verifies_and_any_change_breaks_it() -> None:
    signer = CheckpointSigner.generate()
    maker = ChainMaker(seed=3, signer=signer)
    maker.add_traffic(10)
    record = parse(maker.checkpoint())
    assert record["kind"] == "checkpoint"
    assert record["covers"] == 10
    assert record["covers_hash"] == record["prev"]
    assert verify_checkpoint(record, signer.public_key)
    for field, value in (
        ("covers", 9),
        ("covers_hash", "0" * 64),
        ("node", "node-2"),
        ("device", "db"),
        ("signature", base64.b64encode(b"\0" * 64).decode()),
        ("signature", "not base64!"),
        ("key_id", "0" * 16),
        ("kind", "request"),
    ):
        assert not verify_checkpoint({**record, field: value}, signer.public_key), field
    assert not verify_checkpoint(record, CheckpointSigner.generate().public_key)
    assert not verify_checkpoint({"kind": "checkpoint"}, signer.public_key)


def test_load_public_key_reads_pem_and_hex() -> None:
    signer = CheckpointSigner.generate()
    raw = signer.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for given in (signer.public_key_pem(), signer.public_key_pem().decode(), raw.hex()):
        assert key_id_of(load_public_key(given)) == signer.key_id
    other_pem = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert key_id_of(load_public_key(other_pem)) != signer.key_id


@pytest.mark.parametrize("bad", ["", "zz", "ab" * 31, "-----BEGIN PUBLIC KEY-----\nxx\n"])
def test_load_public_key_refuses_garbage(bad: str) -> None:
    with pytest.raises(InvalidRequest):
        load_public_key(bad)


def test_export_appends_durably_to_a_0600_file_and_reads_back(tmp_path: Path) -> None:
    signer = CheckpointSigner.generate()
    first = ChainMaker(seed=1, signer=signer, node="n1")
    second = ChainMaker(seed=2, signer=signer, node="n2")
    target = tmp_path / "checkpoints.jsonl"
    for maker in (first, second, first):
        maker.add_traffic(4)
        export_checkpoint(maker.checkpoint(export=False).rstrip(b"\n"), target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes().count(b"\n") == 3
    every = read_checkpoints(target)
    assert [r["node"] for r in every] == ["n1", "n2", "n1"]
    mine = read_checkpoints(target, node="n1", device="file")
    assert [r["seq"] for r in mine] == [5, 10]
    assert all(verify_checkpoint(r, signer.public_key) for r in every)
    assert read_checkpoints(target, device="other") == []


def test_read_checkpoints_names_the_bad_line(tmp_path: Path) -> None:
    signer = CheckpointSigner.generate()
    maker = ChainMaker(seed=1, signer=signer)
    target = tmp_path / "checkpoints.jsonl"
    export_checkpoint(maker.checkpoint(), target)
    with target.open("ab") as handle:
        handle.write(maker.request_pair()[0])
    with pytest.raises(LineError, match=r"checkpoints.jsonl:2: not a checkpoint"):
        read_checkpoints(target)
    target.write_bytes(b"{not json\n")
    with pytest.raises(LineError, match=r":1: not a JSON record"):
        read_checkpoints(target)


@pytest.mark.parametrize("seq", ["true", "false", "1.0", '"5"', "null"])
def test_an_exported_checkpoint_whose_seq_is_no_integer_is_refused(
    tmp_path: Path, seq: str
) -> None:
    maker = ChainMaker(seed=1, signer=CheckpointSigner.generate())
    maker.add_traffic(4)
    line = maker.checkpoint()
    target = tmp_path / "checkpoints.jsonl"
    target.write_bytes(line + line.replace(b'"seq":5,', b'"seq":%s,' % seq.encode()))
    with pytest.raises(LineError, match=r"checkpoints.jsonl:2: not a checkpoint record$"):
        read_checkpoints(target)
