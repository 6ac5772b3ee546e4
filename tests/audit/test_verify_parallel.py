"""``verify_files`` with worker processes reports exactly what the sequential path reports.

The block size is made tiny so that a small log is cut into dozens of blocks:
every mutation then lands inside, at the start or at the end of some block, and
the stitching of blocks (and the fall-back to line-by-line checks for a block
that does not follow) is exercised. Each case is verified twice, sequentially
(``workers=0``) and with two workers, and the two reports must be equal.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from medsecrets.audit import verify as verify_module
from medsecrets.audit.checkpoint import CheckpointSigner
from medsecrets.audit.device import ChainHead
from medsecrets.audit.verify import VerifyReport, verify_files
from tests.audit.chainmaker import make_log, parse, write_log

SIGNER = CheckpointSigner.from_private_bytes(bytes(range(1, 33)))
BASE = make_log(600, seed=11, signer=SIGNER, checkpoint_every=100)
FOREIGN = make_log(20, seed=12).lines

Mutation = Callable[[random.Random, list[bytes]], list[bytes]]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_module, "_CHUNK", 8192)


def flip(rng: random.Random, lines: list[bytes]) -> list[bytes]:
    i = rng.randrange(len(lines))
    line = bytearray(lines[i])
    j = rng.randrange(len(line) - 1)
    line[j] = ord("#") if line[j] != ord("#") else ord("%")
    lines[i] = bytes(line)
    return lines


def delete(rng: random.Random, lines: list[bytes]) -> list[bytes]:
    del lines[rng.randrange(len(lines))]
    return lines


def reorder(rng: random.Random, lines: list[bytes]) -> list[bytes]:
    i = rng.randrange(len(lines) - 1)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    return lines


def duplicate(rng: random.Random, lines: list[bytes]) -> list[bytes]:
    i = rng.randrange(len(lines))
    lines.insert(i, lines[i])
    return lines


def insert(rng: random.Random, lines: list[bytes]) -> list[bytes]:
    lines.insert(rng.randrange(len(lines)), rng.choice(FOREIGN))
    return lines


def truncate(rng: random.Random, lines: list[bytes]) -> list[bytes]:
    keep = rng.randrange(1, len(lines))
    torn = lines[keep][: rng.randrange(1, 60)]
    return [*lines[:keep], torn]


def both(files: Sequence[Path], **kw: object) -> Iterator[VerifyReport]:
    for workers in (0, 2):
        yield verify_files(files, workers=workers, **kw)  # type: ignore[arg-type]


def write(tmp_path: Path, lines: Sequence[bytes], parts: int) -> list[Path]:
    cut = len(lines) // parts
    pieces = [lines[i * cut : (i + 1) * cut if i < parts - 1 else None] for i in range(parts)]
    return [write_log(tmp_path / f"audit-{i}.log", piece) for i, piece in enumerate(pieces)]


@pytest.mark.parametrize(
    "mutate", [flip, delete, reorder, duplicate, insert, truncate], ids=lambda m: m.__name__
)
def test_parallel_reports_equal_sequential_ones(tmp_path: Path, mutate: Mutation) -> None:
    rng = random.Random(mutate.__name__)
    for case in range(4):
        lines = mutate(rng, list(BASE.lines))
        files = write(tmp_path, lines, parts=1 + case % 2)
        start = ChainHead() if case % 2 == 0 else None
        sequential, parallel = both(
            files, public_key=SIGNER.public_key, checkpoints=BASE.exported[-1:], start=start
        )
        assert not sequential.ok
        assert parallel == sequential


def test_a_clean_log_is_merged_from_blocks_without_rechecking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write(tmp_path, BASE.lines, parts=2)
    sequential = verify_files(
        files, public_key=SIGNER.public_key, checkpoints=BASE.exported, workers=0
    )
    fed: list[int] = []
    feed = verify_module._Chain.feed

    def counting(self: verify_module._Chain, lines: object) -> bool:
        fed.append(1)
        return feed(self, lines)  # type: ignore[arg-type]

    monkeypatch.setattr(verify_module._Chain, "feed", counting)
    parallel = verify_files(
        files, public_key=SIGNER.public_key, checkpoints=BASE.exported, workers=2
    )
    assert sequential.ok and sequential.checkpoints_verified == len(BASE.exported)
    assert parallel == sequential
    assert fed == []  # every block was checked by a worker and stitched here


@pytest.mark.parametrize("link", ["prev", "seq"])
def test_a_rechained_tail_that_starts_a_block_is_caught_at_the_seam(
    tmp_path: Path, link: str
) -> None:
    """A consistent forged tail whose only bad link (prev or seq) is the first line of a block."""
    files = write(tmp_path, BASE.lines, parts=1)
    with files[0].open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        offsets = [offset for offset, _ in verify_module._cuts(handle.fileno(), size)]
    sizes = [0]
    for line in BASE.lines:
        sizes.append(sizes[-1] + len(line))
    seam = sizes.index(offsets[3])  # the index of the first line of the fourth block
    before = str(parse(BASE.lines[seam - 1])["hash"])
    head = ChainHead(seam, "ab" * 32) if link == "prev" else ChainHead(seam + 5, before)
    tail = make_log(len(BASE.lines) - seam, seed=13, start=head).lines
    files = write(tmp_path, [*BASE.lines[:seam], *tail], parts=1)
    sequential, parallel = both(files, start=ChainHead())
    assert (sequential.ok, sequential.first_bad_index) == (False, seam)
    assert parallel == sequential


def test_a_forged_exported_checkpoint_fails_before_any_block(tmp_path: Path) -> None:
    forged = [dict(BASE.exported[0], hash="0" * 64)]
    files = write(tmp_path, BASE.lines, parts=1)
    sequential, parallel = both(files, public_key=SIGNER.public_key, checkpoints=forged)
    assert not sequential.ok
    assert parallel == sequential


def test_blocks_smaller_than_a_line_still_cut_at_line_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every block reaches the end of the line its nominal end falls in: nothing is split."""
    monkeypatch.setattr(verify_module, "_CHUNK", 64)
    lines = list(BASE.lines[:40])
    files = write(tmp_path, lines, parts=1)
    with files[0].open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        cuts = list(verify_module._cuts(handle.fileno(), size))
    assert [length for _, length in cuts] == [len(line) for line in lines]
    sequential, parallel = both(files, start=ChainHead())
    assert sequential.ok and sequential.records == 40
    assert parallel == sequential


@pytest.mark.parametrize("workers", [0, 2])
def test_progress_adds_up_to_the_files_sizes(tmp_path: Path, workers: int) -> None:
    files = write(tmp_path, BASE.lines, parts=2)
    done: list[int] = []
    report = verify_files(files, start=ChainHead(), workers=workers, progress=done.append)
    assert report.ok
    assert len(done) > 2  # block by block, not once at the end
    assert sum(done) == sum(f.stat().st_size for f in files)
