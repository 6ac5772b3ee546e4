"""``python -m benchmarks.soak [--seconds 60] [--workers 2] [--threads 4] [--seed N]
[--postgres]``: the mixed-load soak of ``tests/server/test_soak_mixed_load.py`` for a
given time.

Starts a real server (a file device and a database device) in a temporary directory
(``--postgres``: its store, and so the database device, in a throwaway PostgreSQL
cluster, which needs ``initdb``/``pg_ctl``),
drives it with ``tests.support.soak.run_load`` until ``--seconds`` pass, stops it
gracefully and checks the trail with ``tests.support.soak.check_trail``. Prints the
answers by operation and status and every broken promise; exits 1 if there is one.
Not part of ``make bench`` (it measures correctness, not speed). Run from the
repository root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from tests.support.soak import check_trail, run_load, soak_server

from medsecrets.testing.pgcluster import PostgresCluster, find_pg_bin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="load time (60)")
    parser.add_argument("--workers", type=int, default=2, help="server workers (2)")
    parser.add_argument("--threads", type=int, default=4, help="client threads (4)")
    parser.add_argument("--seed", type=int, default=20261206)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--postgres", action="store_true", help="the store in a throwaway PostgreSQL cluster"
    )
    args = parser.parse_args(argv)
    if args.postgres and find_pg_bin() is None:
        print("--postgres: PostgreSQL server binaries (initdb, pg_ctl) not found", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="medsecrets-soak-"))
    os.chdir(base)  # the server's working directory: never the repository
    with ExitStack() as stack:
        cluster = stack.enter_context(PostgresCluster()) if args.postgres else None
        with soak_server(base, workers=args.workers, cluster=cluster) as (
            server,
            token,
            key,
            storage,
        ):
            result = run_load(
                server.addr,
                token,
                seed=args.seed,
                threads=args.threads,
                ops=None,
                seconds=args.seconds,
            )
        print(f"{len(result.exchanges)} requests in {args.seconds:g} s; exit {server.returncode}")
        for (op, status), count in sorted(result.statuses().items()):
            print(f"  {op:14} {status:3} {count:6}")
        problems = check_trail(
            base / "data", server.log_text(), result, public_key=key, storage=storage
        )
    if server.returncode != 0:
        problems.append(f"the server exited with {server.returncode}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print(f"data and logs in {base}" if args.keep or problems else "no problem found")
    if not (args.keep or problems):
        shutil.rmtree(base, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
