"""CPU placement (``server.placement``, ``audit.own_cpu``): audit processes on a CPU of their own.

The plan is checked against settings and CPU sets; real server processes show where their
threads and their audit process may run (on this machine's CPUs, skipped with fewer than 2).
"""

from __future__ import annotations

import os
import platform
import selectors
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from medsecrets.errors import ConfigError
from medsecrets.server.config import Settings, load_settings
from medsecrets.server.placement import (
    Placement,
    io_threads,
    place_threads,
    plan,
    split_cpus,
    thread_ids,
)
from medsecrets.testing.serverproc import ServerProcess

TWO_CPUS = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs two CPUs",
)


def _settings(tmp_path: Path, **env: str) -> Settings:
    return load_settings(
        None,
        env={f"MEDSECRETS_{name.upper()}": value for name, value in env.items()},
        overrides={"dev": True, "data_dir": str(tmp_path)},
    )


def test_split_gives_the_last_cpu_to_the_audit_processes() -> None:
    assert split_cpus({0, 1}) == Placement(serving=frozenset({0}), audit=frozenset({1}))
    assert split_cpus([5, 2, 3]) == Placement(serving=frozenset({2, 3}), audit=frozenset({5}))
    assert split_cpus({3}) is None
    assert split_cpus(()) is None


def test_plan_places_a_single_process_server_with_an_audit_process(tmp_path: Path) -> None:
    placement = plan(_settings(tmp_path), allowed={0, 1, 2, 3})
    assert placement == Placement(serving=frozenset({0, 1, 2}), audit=frozenset({3}))


@pytest.mark.parametrize(
    "env",
    [
        {"audit_own_cpu": "false"},
        {"audit_process": "false"},  # file devices written in process: no audit process
        {"audit_enabled": "false"},
        {"workers": "2", "seal_type": "keyfile"},  # each worker has its own audit process
    ],
    ids=["switched-off", "no-audit-process", "no-audit", "workers"],
)
def test_plan_places_nothing_without_a_single_process_and_its_audit_process(
    tmp_path: Path, env: dict[str, str]
) -> None:
    assert plan(_settings(tmp_path, **env), allowed={0, 1}) is None


def test_plan_places_nothing_on_one_cpu(tmp_path: Path) -> None:
    assert plan(_settings(tmp_path), allowed={7}) is None


def _read_once(server: ServerProcess) -> None:
    assert server.token is not None
    response = httpx.get(
        f"{server.addr}/v1/secrets/medessence/development/database",
        headers={"X-Medsecrets-Token": server.token},
    )
    assert response.status_code == 200


@TWO_CPUS
def test_a_server_keeps_its_audit_process_off_its_serving_cpus(tmp_path: Path) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    with ServerProcess(tmp_path / "data", log_dir=tmp_path / "logs") as server:
        _read_once(server)
        assert set(os.sched_getaffinity(server.pid)) == set(allowed[:-1])  # the loop's thread
        (audit,) = server.children()
        assert set(os.sched_getaffinity(audit)) == {allowed[-1]}
        assert '"msg":"cpu placement"' in server.log_text()
        # granian's I/O thread joined the audit process; every other thread stayed
        assert _wait_for(lambda: "cpu placement: transport I/O" in server.log_text())
        with_audit = [tid for tid in _threads(server.pid) if _cpus(tid) == {allowed[-1]}]
        assert len(with_audit) == 1
        assert with_audit[0] != server.pid


def _threads(pid: int) -> list[int]:
    return [int(entry.name) for entry in Path(f"/proc/{pid}/task").iterdir()]


def _cpus(tid: int) -> set[int]:
    return set(os.sched_getaffinity(tid))


def _wait_for(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    """Whether ``check()`` became true within ``seconds`` (a safety net for a loaded
    machine, not a timing threshold)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


@TWO_CPUS
def test_own_cpu_false_leaves_placement_to_the_kernel(tmp_path: Path) -> None:
    allowed = set(os.sched_getaffinity(0))
    with ServerProcess(
        tmp_path / "data", env={"MEDSECRETS_AUDIT_OWN_CPU": "false"}, log_dir=tmp_path / "logs"
    ) as server:
        _read_once(server)
        assert set(os.sched_getaffinity(server.pid)) == allowed
        (audit,) = server.children()
        assert set(os.sched_getaffinity(audit)) == allowed
        assert "cpu placement" not in server.log_text()
        assert all(_cpus(tid) == allowed for tid in _threads(server.pid))


@pytest.mark.skipif(
    not hasattr(os, "SCHED_IDLE") or not Path("/proc/self/schedstat").exists(),
    reason="needs SCHED_IDLE and /proc/<pid>/schedstat (Linux)",
)
@pytest.mark.parametrize(
    ("env", "policy"),
    [({}, "SCHED_IDLE"), ({"MEDSECRETS_AUDIT_PROCESS_PRIORITY": "normal"}, "SCHED_OTHER")],
)
def test_the_audit_process_runs_at_idle_priority_unless_told_otherwise(
    tmp_path: Path, env: dict[str, str], policy: str
) -> None:
    with ServerProcess(tmp_path / "data", env=env, log_dir=tmp_path / "logs") as server:
        _read_once(server)
        (audit,) = server.children()
        assert os.sched_getscheduler(audit) == getattr(os, policy)
        assert os.sched_getscheduler(server.pid) == os.SCHED_OTHER  # the server: left alone


DEV = {"dev": True}


def test_audit_process_priority_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"audit\.process_priority"):
        load_settings(None, env={"MEDSECRETS_AUDIT_PROCESS_PRIORITY": "high"}, overrides=DEV)
    settings = load_settings(
        None, env={"MEDSECRETS_AUDIT_PROCESS_PRIORITY": "normal"}, overrides=DEV
    )
    assert settings.audit.process_priority == "normal"
    assert load_settings(None, env={}, overrides=DEV).audit.process_priority == "idle"


KNOWN_MACHINE = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "aarch64") or not Path("/proc/self/task").is_dir(),
    reason="needs Linux /proc and a machine whose epoll system calls are known",
)


@KNOWN_MACHINE
def test_io_threads_are_the_threads_waiting_in_epoll() -> None:
    """A thread parked in ``epoll`` is found; one waiting on a lock, and this one, are not."""
    stop = threading.Event()
    ids: dict[str, int] = {}

    def in_epoll() -> None:
        ids["epoll"] = threading.get_native_id()
        with selectors.EpollSelector() as selector:
            while not stop.is_set():
                selector.select(0.05)

    def on_lock() -> None:
        ids["lock"] = threading.get_native_id()
        stop.wait()

    threads = [threading.Thread(target=in_epoll), threading.Thread(target=on_lock)]
    for thread in threads:
        thread.start()
    try:
        assert _wait_for(lambda: len(ids) == 2)
        candidates = thread_ids()
        assert {ids["epoll"], ids["lock"], threading.get_native_id()} <= candidates
        assert _wait_for(lambda: io_threads(candidates) == [ids["epoll"]])
    finally:
        stop.set()
        for thread in threads:
            thread.join()


@TWO_CPUS
def test_place_threads_restricts_each_thread_and_says_when_it_cannot() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    stop = threading.Event()
    ids: list[int] = []

    def idle() -> None:
        ids.append(threading.get_native_id())
        stop.wait()

    thread = threading.Thread(target=idle)
    thread.start()
    try:
        assert _wait_for(lambda: bool(ids))
        assert place_threads(ids, frozenset(allowed[-1:]))
        assert set(os.sched_getaffinity(ids[0])) == {allowed[-1]}
        assert set(os.sched_getaffinity(0)) == set(allowed)  # only that thread
        assert not place_threads([ids[0]], frozenset({max(allowed) + 4096}))  # no such CPU
    finally:
        stop.set()
        thread.join()
