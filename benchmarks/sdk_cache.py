"""SDK cache hit path: ``medsecrets.sdk.SecretCache`` beside AWS's ``aws-secretsmanager-caching``.

Both caches are filled from a real server over HTTP (a medsecrets dev server
process; a moto server process for AWS Secrets Manager), then read in a tight
loop in this process: every read is a hit. Goals (issue 3): at least
1,000,000 hits/s, and at least 40x the AWS library's hit path, in the same run.

``run()`` returns a dict of figures (medians of ``repeats`` runs, with the
runs); ``figures()`` gives the same as ``benchmarks.measure.Figure`` rows.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.measure import Figure

PATH = "medessence/development/database"
AWS_NAME = "medessence/development/database"
GOAL_HITS = 1_000_000.0
GOAL_RATIO = 40.0


def _rate(
    get: Callable[..., object], args: tuple[str, ...], count: int, repeats: int
) -> tuple[float, tuple[float, ...]]:
    """Median calls per second of ``get(*args)`` in a bare loop (no wrapper per call)."""
    first = args[0]
    second = args[1] if len(args) > 1 else None
    for _ in range(min(count, 1000)):
        get(*args)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        if second is None:
            for _ in range(count):
                get(first)
        else:
            for _ in range(count):
                get(first, second)
        runs.append(count / (time.perf_counter() - start))
    return statistics.median(runs), tuple(runs)


def _medsecrets(count: int, repeats: int) -> dict[str, object]:
    from medsecrets.sdk import Client, SecretCache
    from medsecrets.testing.serverproc import ServerProcess

    with (
        tempfile.TemporaryDirectory() as tmp,
        ServerProcess(Path(tmp) / "data", log_dir=Path(tmp) / "logs") as server,
        Client(server.addr, server.token, env={}) as client,
    ):
        cache = SecretCache(client, ttl=3600.0)
        get = cache.get
        assert get(PATH, "password")  # the miss: one HTTP read
        fields, fields_runs = _rate(get, (PATH,), count, repeats)
        field, field_runs = _rate(get, (PATH, "password"), count, repeats)
    return {
        "medsecrets_hits_per_s": fields,
        "medsecrets_hits_runs": fields_runs,
        "medsecrets_field_hits_per_s": field,
        "medsecrets_field_hits_runs": field_runs,
    }


def _aws(count: int, repeats: int) -> dict[str, object]:
    import boto3
    from aws_secretsmanager_caching import SecretCache as AwsSecretCache  # type: ignore[import-untyped]
    from aws_secretsmanager_caching import SecretCacheConfig

    from medsecrets.testing.motoserver import (
        DUMMY_ACCESS_KEY_ID,
        DUMMY_SECRET_ACCESS_KEY,
        MotoServer,
    )

    with MotoServer() as moto:
        client = boto3.client(
            "secretsmanager",
            endpoint_url=moto.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=DUMMY_ACCESS_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
        )
        client.create_secret(
            Name=AWS_NAME,
            SecretString='{"username": "medessence_dev", "password": "x7Kp2mQ9vL4nR8tW3yZ6bC1dF"}',
        )
        cache = AwsSecretCache(config=SecretCacheConfig(), client=client)
        get = cache.get_secret_string
        assert get(AWS_NAME)  # the miss: one HTTP call to moto
        rate, runs = _rate(get, (AWS_NAME,), count, repeats)
    return {"aws_caching_hits_per_s": rate, "aws_caching_hits_runs": runs}


def run(*, quick: bool = False, repeats: int = 3) -> dict[str, object]:
    """Measure both hit paths in this run; the figures and whether the goals are met."""
    ours = _medsecrets(200_000 if quick else 2_000_000, repeats)
    theirs = _aws(5_000 if quick else 20_000, repeats)
    hits = float(ours["medsecrets_hits_per_s"])  # type: ignore[arg-type]
    aws = float(theirs["aws_caching_hits_per_s"])  # type: ignore[arg-type]
    ratio = hits / aws
    return {
        **ours,
        **theirs,
        "ratio_vs_aws": ratio,
        "goal_hits_per_s": GOAL_HITS,
        "goal_ratio": GOAL_RATIO,
        "hits_goal_met": hits >= GOAL_HITS,
        "ratio_goal_met": ratio >= GOAL_RATIO,
    }


def figures(quick: bool = False) -> list[Figure]:
    """``run()`` as report rows (the ``benchmarks`` suite convention)."""
    r = run(quick=quick)
    return [
        Figure(
            "SDK cache hit, new SecretFields (goal >= 1,000,000/s)",
            float(r["medsecrets_hits_per_s"]),  # type: ignore[arg-type]
            "hits/s",
            r["medsecrets_hits_runs"],  # type: ignore[arg-type]
        ),
        Figure(
            "SDK cache hit, one field",
            float(r["medsecrets_field_hits_per_s"]),  # type: ignore[arg-type]
            "hits/s",
            r["medsecrets_field_hits_runs"],  # type: ignore[arg-type]
        ),
        Figure(
            "aws-secretsmanager-caching hit (get_secret_string, moto)",
            float(r["aws_caching_hits_per_s"]),  # type: ignore[arg-type]
            "hits/s",
            r["aws_caching_hits_runs"],  # type: ignore[arg-type]
        ),
        Figure(
            "SDK cache hit / aws-secretsmanager-caching hit (goal >= 40x)",
            float(r["ratio_vs_aws"]),  # type: ignore[arg-type]
            "x",
        ),
    ]


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key}: {value}")
