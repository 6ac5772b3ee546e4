"""A server process cannot dump core (its memory holds keys): RLIMIT_CORE is 0, soft and hard."""

from __future__ import annotations

import multiprocessing
import resource
from pathlib import Path

import pytest

from medsecrets.server.coredumps import disable_core_dumps
from medsecrets.testing.serverproc import ServerProcess


def _core_limit(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            soft, hard = line.split()[4:6]
            return soft, hard
    raise AssertionError("no core limit line")


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="needs /proc")
def test_the_server_and_its_workers_cannot_dump_core(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("tls_disable = true\nworkers = 2\n")
    with ServerProcess(
        tmp_path / "data", extra_args=["--config", str(config)], log_dir=tmp_path / "logs"
    ) as server:
        assert _core_limit(server.pid) == ("0", "0")
        workers = server.children(monitor=True)
        assert workers
        for pid in workers:
            assert _core_limit(pid) == ("0", "0")


def _disable_and_report(queue: multiprocessing.Queue[object]) -> None:
    ok = disable_core_dumps()
    queue.put((ok, resource.getrlimit(resource.RLIMIT_CORE)))
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (1024, 1024))
        queue.put("raised")
    except (OSError, ValueError):
        queue.put("refused")


def test_disable_core_dumps_cannot_be_undone() -> None:
    """In a child process (the limit cannot be raised again in this one)."""
    queue: multiprocessing.Queue[object] = multiprocessing.get_context("spawn").Queue()
    child = multiprocessing.get_context("spawn").Process(target=_disable_and_report, args=(queue,))
    child.start()
    child.join(60)
    assert queue.get(timeout=10) == (True, (0, 0))
    assert queue.get(timeout=10) == "refused"
