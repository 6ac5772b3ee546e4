"""``python -m benchmarks [--quick] [SUITE ...]``: run suites and write docs/benchmarks.md.

Each suite module has ``figures(quick: bool) -> list[Figure]``. The report keeps one
section per suite, replaced on each run, with the command and the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import re
import sys
import timeit
from pathlib import Path

from benchmarks.measure import Figure

SUITES = {
    "store": "Issue 2: the encrypted store in process",
    "http": "Issue 3: the server over HTTP",
    "sdk_cache": "Issue 3: the SDK cache in process",
    "audit": "Issue 4: the audit log in process",
}
REPORT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Produced by `make bench` (`python -m benchmarks`). Every figure is the median of at least
three runs, and every goal is a ratio to a ceiling measured in the same run on the same
machine. Sections are rewritten by each run of their suite.

To compare two builds of the server (a change against its commit), `make bench-paired`
(`python -m benchmarks.paired --base HEAD`; `BASE=<revision>`, `ARGS="--rounds 30"`) runs both
at once, the base from a git worktree, and alternates `wrk` rounds between them. It prints
each build's reads a second and CPU a read, and the per-round ratio with a sign test. On a
machine whose speed drifts (session 22) a change of a few per cent shows only this way; its
figures are not written here: quote them, with the command, in the session's notes below.
"""


def _section(suite: str, figures: list[Figure], command: str) -> str:
    lines = [
        f"## {SUITES[suite]}",
        "",
        f"Command: `{command}`  ",
        f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; "
        f"pure-Python speed: `sum(range(1000))` in {_python_speed():.1f} µs",
        "",
        "| measurement | result |",
        "|---|---|",
    ]
    for f in figures:
        value = _fmt(f.value, f.unit)
        if f.runs:
            value += " (runs: " + ", ".join(_fmt(r, "") for r in f.runs) + ")"
        lines.append(f"| {f.name} | {value} |")
    return "\n".join(lines) + "\n"


def _python_speed() -> float:
    """Microseconds of ``sum(range(1000))`` (best of 5): the interpreter's speed on this
    machine, so figures from different machines (or hours) can be compared."""
    rounds = 2000
    return min(timeit.repeat("sum(range(1000))", number=rounds, repeat=5)) / rounds * 1e6


def _fmt(value: float, unit: str) -> str:
    number = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    if unit == "%":
        return f"{value:.0f}%"
    return f"{number} {unit}".strip()


def _write(suite: str, section: str) -> None:
    text = REPORT.read_text() if REPORT.exists() else HEADER
    pattern = re.compile(rf"^## {re.escape(SUITES[suite])}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    REPORT.write_text(text.rstrip() + "\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=", ".join(SUITES))
    parser.add_argument("--quick", action="store_true", help="small counts, no report update")
    args = parser.parse_args(argv)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite {unknown[0]!r} (known: {', '.join(SUITES)})")
    for suite in args.suites or list(SUITES):
        module = importlib.import_module(f"benchmarks.{suite}")
        print(f"== {SUITES[suite]}", flush=True)
        figures: list[Figure] = module.figures(quick=args.quick)
        for f in figures:
            print(f"  {f.name}: {_fmt(f.value, f.unit)}", flush=True)
        if not args.quick:
            _write(suite, _section(suite, figures, f"make bench  # python -m benchmarks {suite}"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
