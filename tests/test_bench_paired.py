"""``benchmarks.paired``: one build of the server against another, in alternating rounds.

Its verdict rests on three small pieces: the order the builds run in, the per-round
ratios with their sign test, and the overlay interpreter that makes the base build import
medsecrets from another tree (its audit process too, which runs ``python -I``). Each
would give plausible figures when wrong.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.paired import (
    WORKTREE,
    alternation,
    main,
    overlay_interpreter,
    sign_test,
    summarize,
)

from medsecrets.testing.serverproc import ServerProcess


def test_the_builds_alternate_which_runs_first() -> None:
    assert alternation(4) == [
        ("base", "work"),
        ("work", "base"),
        ("base", "work"),
        ("work", "base"),
    ]
    assert alternation(1) == [("base", "work")]


def test_the_sign_test_is_two_sided_and_leaves_ties_out() -> None:
    assert sign_test(10, 0) == pytest.approx(2 / 1024)
    assert sign_test(0, 10) == pytest.approx(2 / 1024)
    assert sign_test(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert sign_test(5, 5) == 1.0
    assert sign_test(0, 0) == 1.0


def test_the_summary_is_of_the_per_round_ratios() -> None:
    # a drifting machine: work is 10% faster in every round, whatever the round's speed
    base = [1000.0, 2000.0, 500.0, 1500.0, 800.0]
    work = [1100.0, 2200.0, 550.0, 1650.0, 880.0]
    summary = summarize(base, work)
    assert summary.median == pytest.approx(1.1)
    assert summary.low == pytest.approx(1.1) and summary.high == pytest.approx(1.1)
    assert (summary.work_faster, summary.base_faster) == (5, 0)
    assert summary.p_value == pytest.approx(2 / 32)
    mixed = summarize([100.0, 100.0, 100.0], [90.0, 100.0, 120.0])
    assert mixed.median == pytest.approx(1.0)
    assert (mixed.low, mixed.high) == (pytest.approx(0.9), pytest.approx(1.2))
    assert (mixed.work_faster, mixed.base_faster) == (1, 1)  # the tie counts for neither


@pytest.mark.parametrize(
    ("base", "work"), [([], []), ([1.0], [1.0, 2.0]), ([1.0, 0.0], [1.0, 1.0])]
)
def test_a_summary_of_unpaired_or_empty_or_zero_rates_is_refused(
    base: list[float], work: list[float]
) -> None:
    with pytest.raises(ValueError):
        summarize(base, work)


@pytest.mark.parametrize("isolated", [False, True])
def test_the_overlay_interpreter_imports_medsecrets_from_the_other_tree(
    tmp_path: Path, isolated: bool
) -> None:
    tree = tmp_path / "tree" / "src" / "medsecrets"
    tree.mkdir(parents=True)
    (tree / "__init__.py").write_text("MARK = 'the other tree'\n")
    python = overlay_interpreter(tmp_path / "tree" / "src", tmp_path / "overlay")
    flags = ["-I"] if isolated else []  # the audit process runs isolated
    found = subprocess.run(
        [
            str(python),
            *flags,
            "-c",
            "import medsecrets, orjson, granian; print(medsecrets.__file__, medsecrets.MARK)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    location, _, mark = found.stdout.strip().partition(" ")
    assert Path(location) == tree / "__init__.py"
    assert mark == "the other tree"


def test_a_server_runs_under_the_interpreter_it_is_given(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", python="/opt/other/bin/python")
    assert server.command()[:3] == ["/opt/other/bin/python", "-m", "medsecrets.server"]
    assert ServerProcess(tmp_path / "data").command()[0] == sys.executable
    with pytest.raises(ValueError, match="preload"):
        ServerProcess(tmp_path / "data", preload=True, python="/opt/other/bin/python")


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (make bench installs it)")
@pytest.mark.parametrize("load", ["read", "write"])
def test_one_round_of_two_builds_is_reported_as_json(
    load: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # a write round with a failed write (a path refused, a token not sent) would exit
    assert (
        main(
            [
                "--load",
                load,
                "--base",
                WORKTREE,
                "--rounds",
                "1",
                "--seconds",
                "1",
                "--secrets",
                "43",
                "--base-env",
                "MEDSECRETS_MONITOR_ENABLED=false",
                "--output",
                "json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    builds = {b["build"]: b for b in report["builds"]}
    assert set(builds) == {"base", "work"}
    assert all(b["per_second"] > 0 and b["loop_us"] > 0 for b in builds.values())
    assert report["paired"]["rounds"] == 1
    assert report["paired"]["median"] == pytest.approx(
        builds["work"]["per_second"] / builds["base"]["per_second"]
    )


def test_an_unknown_revision_is_one_clear_line() -> None:
    with pytest.raises(SystemExit, match="no such revision 'no-such-rev-xyz'"):
        main(["--base", "no-such-rev-xyz", "--rounds", "1"])


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (make bench installs it)")
def test_a_build_whose_server_cannot_start_is_one_clear_line() -> None:
    with pytest.raises(SystemExit) as stopped:
        main(
            [
                "--base",
                WORKTREE,
                "--base-env",
                "MEDSECRETS_STORAGE_TYPE=nonsense",
                "--rounds",
                "1",
                "--seconds",
                "1",
            ]
        )
    message = str(stopped.value)
    assert message.startswith("paired: the base build's server did not start (the server exited")
    assert "\n" not in message and "server.log" in message
