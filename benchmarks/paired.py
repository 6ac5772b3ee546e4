"""``python -m benchmarks.paired``: the secret read (or write) of one build of the server
against another's.

Two servers run at once on this machine: the working tree's (``work``) and a git revision's
(``base``; ``HEAD`` by default, so an uncommitted change is measured against its commit).
Both are seeded alike; then ``wrk`` (32 connections, as ``make bench``) reads the same secret
from them in alternating rounds (base then work, then work then base, ...); with ``--load
write`` it writes new secrets instead, as ``make bench``'s durable-write run does. The report
gives, per build, the median requests a second and the CPU a request cost (the event-loop
thread, the whole server process, its audit process: ``benchmarks.cpu``), and the ratio
work/base of each round: its median, its range, and in how many rounds work was faster, with
a two-sided sign test. On a machine whose speed drifts by ±10% within minutes
(``docs/benchmarks.md``, session 22) a change worth a few per cent shows only this way: both
builds meet the same spells.

The base build runs from a temporary git worktree through an *overlay interpreter* (a venv
with no package of its own whose ``.pth`` file puts the worktree's ``src`` first and this
interpreter's ``sys.path`` after it): both builds share every dependency and differ in
medsecrets only. The audit process follows its server: it is started with ``python -I``,
which skips ``PYTHONPATH`` but not a venv's ``.pth`` files.

``--env``, ``--base-env`` and ``--work-env`` (``KEY=VALUE``, repeatable) set server settings
for both builds or one; with ``--base WORKTREE`` both builds are the working tree's and only
such settings differ (``--base-env MEDSECRETS_MONITOR_ENABLED=false``, say).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.cpu import CpuShare
from benchmarks.http import (
    CONNECTIONS,
    READ_PATH,
    WrkResult,
    measured_wrk,
    seed,
    write_script,
    wrk,
)
from medsecrets.testing.serverproc import ServerProcess

__all__ = [
    "BuildFigures",
    "PairedSummary",
    "alternation",
    "main",
    "overlay_interpreter",
    "sign_test",
    "summarize",
]

ROOT = Path(__file__).resolve().parent.parent
WORKTREE = "WORKTREE"
"""``--base WORKTREE``: the base build is the working tree too (only settings differ)."""

BUILDS = ("base", "work")

LOADS = {"read": "reads", "write": "writes"}
"""``--load``: what ``wrk`` asks each build for, and the word its figures are counted in."""


def overlay_interpreter(src: Path, where: Path) -> Path:
    """A Python at ``where`` (created) that imports medsecrets from ``src`` and everything
    else from this interpreter's ``sys.path``; its path."""
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(where)
    python = where / "bin" / "python"
    found = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    site = Path(found.stdout.strip())
    ours = (ROOT / "src").resolve()  # the working tree's medsecrets: never the base's
    shared = [
        entry
        for entry in sys.path
        if entry and Path(entry).is_dir() and Path(entry).resolve() != ours
    ]
    lines = [f"import sys; sys.path.insert(0, {str(src)!r})", *shared]
    # the name sorts first: no other .pth of this venv (there are none) runs before it
    (site / "000-medsecrets-overlay.pth").write_text("\n".join(lines) + "\n")
    return python


def alternation(rounds: int) -> list[tuple[str, str]]:
    """The order of the builds in each round: base first in even rounds, work in odd ones
    (so neither always runs right after the other's load)."""
    return [BUILDS if n % 2 == 0 else BUILDS[::-1] for n in range(rounds)]


def sign_test(wins: int, losses: int) -> float:
    """The two-sided sign test's p-value of ``wins`` against ``losses`` (ties left out):
    how likely so lopsided a split is when neither build is faster."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / float(2**n))


@dataclass(frozen=True, slots=True)
class PairedSummary:
    """The per-round ratios work/base: median, range, wins of work, and the sign test."""

    rounds: int
    median: float
    low: float
    high: float
    work_faster: int
    base_faster: int
    p_value: float


def summarize(base: Sequence[float], work: Sequence[float]) -> PairedSummary:
    """``PairedSummary`` of two builds' rates, round by round (``ValueError`` when the
    rounds differ in number, are none, or hold a rate that is not positive)."""
    if len(base) != len(work) or not base:
        raise ValueError("both builds need the same number of rounds, at least one")
    if min(*base, *work) <= 0:
        raise ValueError("every rate must be positive")
    ratios = [w / b for b, w in zip(base, work, strict=True)]
    wins = sum(1 for r in ratios if r > 1)
    losses = sum(1 for r in ratios if r < 1)
    return PairedSummary(
        rounds=len(ratios),
        median=statistics.median(ratios),
        low=min(ratios),
        high=max(ratios),
        work_faster=wins,
        base_faster=losses,
        p_value=sign_test(wins, losses),
    )


@dataclass(frozen=True, slots=True)
class BuildFigures:
    """One build's medians over the rounds: requests a second, p99 latency, and CPU a
    request."""

    build: str
    revision: str
    per_second: float
    p99_ms: float
    loop_us: float
    server_us: float
    audit_us: float


def _figures(
    build: str, revision: str, runs: list[WrkResult], shares: list[CpuShare]
) -> BuildFigures:
    def median_of(values: list[float]) -> float:
        return statistics.median(values) if values else math.nan

    return BuildFigures(
        build=build,
        revision=revision,
        per_second=median_of([r.rps for r in runs]),
        p99_ms=median_of([r.p99_ms for r in runs]),
        loop_us=median_of([s.loop_us for s in shares]),
        server_us=median_of([s.server_us for s in shares]),
        audit_us=median_of([s.children_us for s in shares]),
    )


def _settings(pairs: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"paired: a setting is KEY=VALUE, not {pair!r}")
        found[key] = value
    return found


def _resolve(revision: str) -> str:
    """``revision``'s commit id (``SystemExit`` with git's reason when there is none)."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        raise SystemExit(f"paired: no such revision {revision!r} in {ROOT}")
    return found.stdout.strip()


@contextmanager
def _worktree(commit: str, where: Path) -> Iterator[Path]:
    """A detached git worktree of ``commit`` at ``where`` while the block runs."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(where), commit],
        check=True,
    )
    try:
        yield where
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], check=False
        )


def _markdown(
    figures: Sequence[BuildFigures], summary: PairedSummary, seconds: int, load: str
) -> str:
    what = "Secret read" if load == "read" else "Secret write (a new secret each)"
    lines = [
        f"{what}, `wrk -c{CONNECTIONS}`, {summary.rounds} rounds of {seconds} s per build,"
        " builds alternating",
        "",
        f"| build | revision | {LOADS[load]}/s | p99 ms | loop µs/{load} | server µs/{load}"
        f" | audit µs/{load} |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        lines.append(
            f"| {f.build} | {f.revision} | {f.per_second:,.0f} | {f.p99_ms:.2f} |"
            f" {f.loop_us:.1f} | {f.server_us:.1f} | {f.audit_us:.1f} |"
        )
    lines += [
        "",
        f"work/base per round: median {summary.median:.3f} (from {summary.low:.3f} to"
        f" {summary.high:.3f}); work faster in {summary.work_faster} of {summary.rounds}"
        f" rounds, base in {summary.base_faster} (sign test p = {summary.p_value:.3g})",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paired", description=__doc__)
    parser.add_argument("--base", default="HEAD", help="git revision, or WORKTREE (default HEAD)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per build (default 20)")
    parser.add_argument("--seconds", type=int, default=4, help="seconds a run (default 4)")
    parser.add_argument("--secrets", type=int, default=1000, help="secrets seeded (default 1000)")
    parser.add_argument(
        "--load", choices=tuple(LOADS), default="read", help="read one secret, or write new ones"
    )
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--base-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", choices=("table", "json"), default="table")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds < 1 or args.secrets < 43:
        parser.error("--rounds and --seconds must be positive, --secrets at least 43")
    shared = _settings(args.env)
    env = {
        "base": {**shared, **_settings(args.base_env)},
        "work": {**shared, **_settings(args.work_env)},
    }
    commit = None if args.base == WORKTREE else _resolve(args.base)
    if shutil.which("wrk") is None:
        raise SystemExit("paired: wrk is not installed (make bench installs it)")
    from medsecrets.catalog.loader import default_catalog

    value = default_catalog().category("auth").build({}, development=False)
    with tempfile.TemporaryDirectory(prefix="medsecrets-paired-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        revision = {"work": "working tree"}
        python = {"work": sys.executable}
        if commit is None:
            revision["base"] = "working tree"
            python["base"] = sys.executable
        else:
            revision["base"] = commit[:12]
            tree = stack.enter_context(_worktree(commit, workdir / "base-tree"))
            python["base"] = str(overlay_interpreter(tree / "src", workdir / "base-python"))
        servers: dict[str, ServerProcess] = {}
        urls: dict[str, str] = {}
        for build in BUILDS:
            server = ServerProcess(workdir / f"data-{build}", env=env[build], python=python[build])
            try:
                stack.enter_context(server)
                token = server.token
                assert token is not None
                seed(server.addr, token, value, args.secrets)
            except RuntimeError as exc:  # one line, and where the whole story is
                reason = str(exc).splitlines()[0].rstrip(":")
                raise SystemExit(
                    f"paired: the {build} build's server did not start ({reason});"
                    f" its log: {server.log_path}"
                ) from None
            servers[build] = server
            # a write's script names its own paths: the URL gives wrk the server only
            path = f"v1/secrets/{READ_PATH}" if args.load == "read" else ""
            urls[build] = f"{server.addr}/{path}"

        def load(build: str, run: int) -> dict[str, str | None]:
            """``wrk``'s token and script for ``build``'s run ``run`` (new paths in each)."""
            token = servers[build].token
            assert token is not None
            if args.load == "read":
                return {"token": token, "script": None}
            return {"token": None, "script": write_script(token, run, value)}

        for build in BUILDS:  # warm both up (caches, the audit file) before the first round
            wrk(urls[build], seconds=2, **load(build, 0))
        runs: dict[str, list[WrkResult]] = {build: [] for build in BUILDS}
        shares: dict[str, list[CpuShare]] = {build: [] for build in BUILDS}
        for number, order in enumerate(alternation(args.rounds), start=1):
            for build in order:
                result = measured_wrk(
                    servers[build].pid,
                    shares[build],
                    urls[build],
                    seconds=args.seconds,
                    **load(build, number),
                )
                if result.errors:
                    raise SystemExit(
                        f"paired: wrk saw {result.errors} failed {LOADS[args.load]} ({build})"
                    )
                runs[build].append(result)
            if args.output == "table":
                print(
                    f"round {number}/{args.rounds}: base {runs['base'][-1].rps:,.0f}"
                    f" work {runs['work'][-1].rps:,.0f} {LOADS[args.load]}/s",
                    file=sys.stderr,
                    flush=True,
                )
    figures = [_figures(b, revision[b], runs[b], shares[b]) for b in BUILDS]
    summary = summarize([r.rps for r in runs["base"]], [r.rps for r in runs["work"]])
    if args.output == "json":
        print(json.dumps({"builds": [asdict(f) for f in figures], "paired": asdict(summary)}))
    else:
        print(_markdown(figures, summary, args.seconds, args.load))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
